"""Binary-scoped policy through /proc with real programs: the proxy finds which executable
holds each agent connection (never argv) and admits only the listed ones."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from grantbox.profiles import EffectiveConfig, PolicyEntry, SandboxPolicy, build_effective_config
from grantbox.proxy import ProcPrograms
from grantbox.proxy.programs import proc_address, socket_inode
from tests.support.proxy_clients import curl
from tests.support.proxy_harness import RecordingTokens, endpoint, grant_profile, running_proxy
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK

CURL = shutil.which("curl") or "/usr/bin/curl"
WGET = shutil.which("wget")
PYTHON_LINK = "/usr/bin/python3"


def _config(port: int, binaries: tuple[str, ...]) -> EffectiveConfig:
    entry = PolicyEntry.model_validate(
        {
            "name": "scoped",
            "endpoints": [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)],
            "binaries": list(binaries),
        }
    )
    return build_effective_config("s1", SandboxPolicy(network=(entry,)), [])


async def _python_get(proxy_url: str, url: str, python: str = sys.executable) -> int:
    """A request from a python process (a different executable than curl)."""
    handler = f"urllib.request.ProxyHandler({{'http': '{proxy_url}'}})"
    code = (
        "import sys, urllib.request, urllib.error\n"
        f"opener = urllib.request.build_opener({handler})\n"
        "try:\n"
        f"    print(opener.open('{url}', timeout=10).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    process = await asyncio.create_subprocess_exec(
        python, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return int(out.strip())


async def _wget_status(proxy_url: str, url: str) -> int:
    assert WGET is not None
    process = await asyncio.create_subprocess_exec(
        WGET,
        "-q",
        "-S",
        "-O",
        "/dev/null",
        "-e",
        "use_proxy=yes",
        "-e",
        f"http_proxy={proxy_url}",
        url,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    for line in err.decode(errors="replace").splitlines():
        if line.strip().startswith("HTTP/"):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(WGET is None, reason="wget is installed by scripts/bootstrap.sh")
async def test_only_the_listed_executable_is_admitted(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    url = f"http://alpha.localhost:{port}/x"
    config = _config(port, (CURL,))
    async with running_proxy(config, RecordingTokens(), tmp_path, programs=ProcPrograms()) as rp:
        by_curl = await curl(url, proxy=rp.url)
        by_python = await _python_get(rp.url, url)
        by_wget = await _wget_status(rp.url, url)
    assert by_curl.status == 200
    assert (by_python, by_wget) == (403, 403)
    assert len(plain_upstream.requests) == 1
    denied = [e for e in rp.events if e.get("status_code") == "policy_denied"]
    assert len(denied) == 2 and all("program" in e["status_detail"] for e in denied)


async def test_a_symlinked_binary_names_its_target(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """``/usr/bin/python3`` is a symlink; the kernel reports the resolved executable and
    the policy's path is resolved the same way."""
    assert Path(PYTHON_LINK).is_symlink()
    port = plain_upstream.port
    url = f"http://alpha.localhost:{port}/x"
    async with running_proxy(
        _config(port, (PYTHON_LINK,)), RecordingTokens(), tmp_path, programs=ProcPrograms()
    ) as rp:
        assert await _python_get(rp.url, url, PYTHON_LINK) == 200
        if Path(sys.executable).resolve() != Path(PYTHON_LINK).resolve():
            assert await _python_get(rp.url, url, sys.executable) == 403  # another python
        assert (await curl(url, proxy=rp.url)).status == 403


async def test_a_token_for_a_binaries_profile_goes_only_to_that_program(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)]
    ).model_copy(update={"binaries": (CURL,)})
    config = build_effective_config("s1", SandboxPolicy(), [("alpha", profile)])
    tokens = RecordingTokens(token="for-curl")
    url = f"http://alpha.localhost:{port}/x"
    async with running_proxy(config, tokens, tmp_path, programs=ProcPrograms()) as rp:
        by_curl = await curl(url, proxy=rp.url)
        by_python = await _python_get(rp.url, url)
    assert by_curl.status == 200 and by_python == 403
    assert [r.header("authorization") for r in plain_upstream.requests] == [["Bearer for-curl"]]
    assert len(tokens.asked) == 1


def test_proc_addresses_and_socket_lookup() -> None:
    """How /proc/net/tcp spells addresses, and finding an inode by both ends."""
    local = proc_address("127.0.0.1", 5000)
    remote = proc_address("127.0.0.1", 3128)
    assert local[0] == ("0100007F:1388" if sys.byteorder == "little" else "7F000001:1388")
    assert len(local) == 2  # the v4 form and the v4-mapped v6 form
    table = [
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid",
        f"   0: {remote[0]} {local[0]} 01 00000000:00000000 00:00000000 00000000 0 0 111 1",
        f"   1: {local[0]} {remote[0]} 01 00000000:00000000 00:00000000 00000000 0 0 222 1",
    ]
    assert socket_inode(iter(table), local, remote) == 222
    assert socket_inode(iter(table), proc_address("127.0.0.1", 5001), remote) is None


async def test_a_sandbox_scope_counts_only_processes_below_its_launchers(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """With ``sandbox_of`` (a supervisor's pid) only processes more than ``launcher_depth``
    levels below it are the sandbox's: curl started by this test process is one level down,
    so it counts with depth 0 and is nobody's with depth 1."""
    port = plain_upstream.port
    url = f"http://alpha.localhost:{port}/x"
    inside = ProcPrograms(sandbox_of=os.getpid(), launcher_depth=0)
    outside = ProcPrograms(sandbox_of=os.getpid(), launcher_depth=1)
    async with running_proxy(
        _config(port, (CURL,)), RecordingTokens(), tmp_path, programs=inside
    ) as rp:
        assert (await curl(url, proxy=rp.url)).status == 200
    async with running_proxy(
        _config(port, (CURL,)), RecordingTokens(), tmp_path, programs=outside
    ) as rp:
        assert (await curl(url, proxy=rp.url)).status == 403
