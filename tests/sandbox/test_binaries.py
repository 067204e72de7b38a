"""Binary-scoped policy end to end (#14.5): inside a real sandbox an endpoint listed with
``binaries: [/usr/bin/curl]`` admits curl, and refuses python3 and wget with
``policy_denied``; a provider profile with ``binaries`` gives its token to curl only.
The proxy finds the program through /proc (socket inode, holder, executable), never argv."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.sandbox_stack import ALPHA, Stack, running_stack

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("wget") is None, reason="scripts/bootstrap.sh installs wget"),
]

CURL = shutil.which("curl") or "/usr/bin/curl"

# Each prints the HTTP status it got through the sandbox's proxy (from its environment).
PROBES = {
    "curl": "curl -s -o /dev/null -w '%{http_code}' {url}",
    "python3": (
        'python3 -c "import urllib.request as u, urllib.error as e\n'
        "try: print(u.urlopen('{url}', timeout=10).status, end='')\n"
        "except e.HTTPError as x: print(x.code, end='')\""
    ),
    "wget": "wget -S -O /dev/null {url} 2>&1 | awk '/HTTP\\//{{print $2}}' | tail -1 | tr -d '\\n'",
    # curl started by python is still curl: the holder decides, not the parent
    "curl-under-python3": (
        "python3 -c \"import subprocess; subprocess.run(['curl', '-s', '-o', '/dev/null', "
        "'-w', '%{{http_code}}', '{url}'])\""
    ),
}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


async def _create(stack: Stack, *args: str) -> None:
    name = args[args.index("--name") + 1]
    # Off the event loop: the identity agent serving the driver runs on it.
    await asyncio.to_thread(stack.gw.ok, "sandbox", "create", *args)
    for _ in range(400):  # bounded: 20 s
        shown = await asyncio.to_thread(stack.gw.run, "sandbox", "get", name)
        if "ready" in str(shown.stdout):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"sandbox {name} did not become ready")


async def _probe(stack: Stack, sandbox: str, program: str, url: str) -> str:
    script = PROBES[program].replace("{url}", url).replace("{{", "{").replace("}}", "}")
    result = await asyncio.to_thread(
        stack.gw.run, "sandbox", "exec", "--name", sandbox, "--", "sh", "-c", script
    )
    return str(result.stdout).strip()


async def test_an_endpoint_for_curl_admits_curl_only(stack: Stack) -> None:
    endpoint = {"host": ALPHA, "port": stack.upstream.port, "allowed_ips": ["127.0.0.1"]}
    policy = {"network": [{"name": "curl-only", "endpoints": [endpoint], "binaries": [CURL]}]}
    path = stack.gw.write("binaries-policy.yaml", policy)
    await _create(stack, "--name", "scoped", "--policy", path)
    url = f"{stack.alpha_url}/scoped"
    seen = {name: await _probe(stack, "scoped", name, url) for name in PROBES}
    assert seen == {"curl": "200", "python3": "403", "wget": "403", "curl-under-python3": "200"}
    assert len([r for r in stack.upstream.requests if r.target == "/scoped"]) == 2
    for _ in range(200):  # events ship every half second
        shipped = await asyncio.to_thread(stack.gw.run, "sandbox", "events", "scoped", "-o", "json")
        if str(shipped.stdout).count("policy_denied") >= 2:
            break
        await asyncio.sleep(0.05)
    assert str(shipped.stdout).count("policy_denied") >= 2


async def test_a_profiles_token_goes_only_to_its_binaries(stack: Stack) -> None:
    profile = stack.profile() | {"binaries": [CURL]}
    written = stack.gw.write("alpha-bin.yaml", profile)
    await asyncio.to_thread(stack.gw.ok, "profile", "import", "-f", written)
    await asyncio.to_thread(
        stack.gw.ok, "provider", "create", "--name", "pb", "--type", "alpha",
        "--runtime-credentials",
    )  # fmt: skip
    await _create(stack, "--name", "tok", "--provider", "pb")
    url = f"{stack.alpha_url}/tok"
    assert await _probe(stack, "tok", "curl", url) == "200"
    assert await _probe(stack, "tok", "python3", url) == "403"
    (seen,) = [r for r in stack.upstream.requests if r.target == "/tok"]
    assert seen.header("authorization") == [f"Bearer {stack.issuer.issued[-1]}"]
