"""Stored credentials through a real sandbox (`grantbox up` parts: gateway, local driver,
supervisor, fence, proxy) with recording upstreams.

The agent's environment holds a placeholder; the bound endpoint receives the value; the
same placeholder anywhere else (another host, port, path, a query to an unbound host, a
Basic header, a redirect target, a body that did not opt in) is refused and never
forwarded; the agent can read the value nowhere (environment, files, /proc, proxy
answers); a value update reaches the running agent under the same placeholder, a detach
stops it resolving. Also several grants on one request, end to end.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from grantbox.proxy import PLACEHOLDER
from tests.support.agent_view import sections
from tests.support.proxy_upstream import RecordingUpstream, running_upstream
from tests.support.sandbox_stack import ALPHA, Stack, running_stack

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

VALUE = "ghp_Sandbox0Secret&v"
NEW_VALUE = "ghp_Rotated1Secret"
BETA = "beta.localhost"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


@pytest.fixture
async def other() -> AsyncIterator[RecordingUpstream]:
    async with running_upstream() as upstream:
        yield upstream


async def cli(stack: Stack, *args: str) -> Any:
    """The CLI off the event loop: the identity agent the gateway calls runs on it."""
    return await asyncio.to_thread(stack.gw.run, *args)


async def ok(stack: Stack, *args: str) -> Any:
    return await asyncio.to_thread(stack.gw.ok, *args)


async def shown(stack: Stack, *args: str) -> str:
    return str((await cli(stack, *args)).stdout)


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.05)


def _processes_with(marker: bytes) -> dict[int, tuple[bytes, bytes]]:
    """The command line and environment of every process whose argv holds ``marker``, read
    together (a process that ends while being read is left out)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                if marker in cmdline:
                    found[int(entry.name)] = (cmdline, (entry / "environ").read_bytes())
            except OSError:
                continue
    return found


def loopback(host: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"host": host, "port": port, "allowed_ips": ["127.0.0.1"], **extra}


async def setup(stack: Stack, other: RecordingUpstream, loop: str) -> None:
    port = stack.upstream.port
    profile = {
        "id": "svc",
        "credentials": [{"name": "key", "required": True, "env_var": "SVC_TOKEN"}],
        "endpoints": [
            loopback(ALPHA, port, path="/v1/**"),
            loopback(ALPHA, port, path="/redirect"),
            loopback(ALPHA, port, path="/form/**", credential_body_rewrite=True),
        ],
    }
    policy = {
        "network": [
            {
                "name": "web",
                "endpoints": [
                    loopback(host, p) for host in (ALPHA, BETA) for p in (port, other.port)
                ],
            }
        ]
    }
    await ok(stack, "profile", "import", "-f", stack.gw.write("svc.yaml", profile))
    await ok(
        stack,
        "provider",
        "create",
        "--name",
        "svc",
        "--type",
        "svc",
        "--credential",
        f"key={VALUE}",
    )
    await ok(
        stack,
        "sandbox", "create", "--name", "box", "--provider", "svc",
        "--policy", stack.gw.write("policy.yaml", policy), "--", "sh", "-c", loop,
    )  # fmt: skip


CHECKS = r"""
P="$SVC_TOKEN"
A="http://{alpha}:{port}"
check() {{ name=$1; shift; echo "== $name"; curl -sS --max-time 10 -w '\n%{{http_code}}\n' "$@"; }}
check bound -o /dev/null -H "Authorization: Bearer $P" "$A/v1/user?token=$P"
check basic -o /dev/null -u "me:$P" "$A/v1/basic"
J='Content-Type: application/json'
check form -o /dev/null -H "$J" --data-binary "{{\"t\":\"$P\"}}" "$A/form/x"
check host -H "Authorization: Bearer $P" "http://{beta}:{port}/v1/x"
check port "http://{alpha}:{other}/v1/x?token=$P"
check path -H "X-Key: $P" "$A/v2/x"
check query "http://{beta}:{other}/search?token=$P"
check basic_elsewhere -u "me:$P" "http://{beta}:{port}/v1/x"
check body --data-binary "token=$P" "$A/v1/x"
check redirect -L --location-trusted -H "Authorization: Bearer $P" \
  "$A/redirect?to=http://{beta}:{port}/v1/landing"
echo "== env"; env
echo "== files"
# The value to look for, never whole in any argv here (split in the script, read from a
# file by grep): every file the agent sees, binary ones (environ, cmdline) included.
printf '%s%s' "$V1" "$V2" > /tmp/.pattern
grep -rals -F -f /tmp/.pattern --exclude=.pattern \
  /etc /tmp /dev/shm /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null
echo "searched $(ls -d /proc/[0-9]* | wc -l) processes"
"""


async def test_the_placeholder_resolves_only_where_bound_and_the_agent_never_sees_the_value(
    stack: Stack, other: RecordingUpstream
) -> None:
    port = stack.upstream.port
    loop = (
        f'while :; do curl -s -o /dev/null -H "X-Key: $SVC_TOKEN" http://{ALPHA}:{port}/v1/agent;'
        " sleep 0.1; done"
    )
    await setup(stack, other, loop)

    def agent_requests() -> list[Any]:
        return [r for r in stack.upstream.requests if r.target == "/v1/agent"]

    await until(lambda: bool(agent_requests()), 20, "the agent's first request")
    assert agent_requests()[0].header("x-key") == [VALUE]

    # Every check from inside the sandbox, as an exec (same fence, same proxy).
    script = CHECKS.format(alpha=ALPHA, beta=BETA, port=port, other=other.port)
    before = len(stack.upstream.requests)
    half = len(VALUE) // 2
    split = f"V1='{VALUE[:half]}'; V2='{VALUE[half:]}'\n"
    result = await cli(stack, "sandbox", "exec", "--name", "box", "--", "sh", "-c", split + script)
    found = sections(result.stdout)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    for name in ("bound", "basic", "form"):
        assert found[name].split() == ["200"], (name, found[name])
    refused = ("host", "port", "path", "query", "basic_elsewhere", "body", "redirect")
    for name in refused:
        body, _, status = found[name].strip().rpartition("\n")
        assert status == "403", (name, found[name])
        assert json.loads(body)["error"] == "credential_endpoint_mismatch", (name, body)
    # The agent's view: a placeholder in its environment, the value nowhere.
    (line,) = [x for x in found["env"].splitlines() if x.startswith("SVC_TOKEN=")]
    placeholder = line.split("=", 1)[1]
    assert PLACEHOLDER.fullmatch(placeholder)
    assert VALUE not in result.stdout and VALUE not in result.stderr
    files = found["files"].strip().splitlines()
    assert files[-1].startswith("searched ") and int(files[-1].split()[1]) >= 3, files
    assert files[:-1] == [], f"the value is readable in the sandbox: {files}"
    # And from outside: the agent's processes hold the placeholder, never the value.
    # The supervisor (its argv), the agent's shell and, when caught mid-request, its curl.
    holders = _processes_with(b"/v1/agent")
    agents = [p for p, (argv, _) in holders.items() if argv.startswith((b"sh\0", b"curl\0"))]
    assert agents
    for pid, (_, environ) in holders.items():
        assert VALUE.encode() not in environ
        assert (f"SVC_TOKEN={placeholder}".encode() in environ.split(b"\0")) == (pid in agents)

    # What reached the upstreams: the value where bound, nothing of any refusal.
    seen = [r for r in stack.upstream.requests[before:] if r.target != "/v1/agent"]
    assert [r.target.split("?")[0] for r in seen] == [
        "/v1/user",
        "/v1/basic",
        "/form/x",
        "/redirect",
    ]
    user, basic, form, _redirect = seen
    assert user.target == "/v1/user?token=ghp_Sandbox0Secret%26v"
    assert user.header("authorization") == [f"Bearer {VALUE}"]
    assert base64.b64decode(basic.header("authorization")[0].split()[1]).decode() == f"me:{VALUE}"
    assert (
        form.sha256
        == hashlib.sha256(json.dumps({"t": VALUE}, separators=(",", ":")).encode()).hexdigest()
    )
    assert other.connections == 0
    assert placeholder.encode() not in stack.upstream.received

    # A new value reaches the running agent under the placeholder it already holds.
    await ok(stack, "provider", "update", "svc", "--credential", f"key={NEW_VALUE}")
    await until(
        lambda: agent_requests()[-1].header("x-key") == [NEW_VALUE], 10, "the rotated value"
    )

    # Detached: the agent's placeholder resolves no more; its requests are refused.
    await ok(stack, "sandbox", "detach", "--name", "box", "--provider", "svc")

    deadline = time.monotonic() + 15
    while True:
        events = await shown(stack, "sandbox", "events", "box", "-o", "json")
        if any(
            "credential_endpoint_mismatch" in line and "/v1/agent" in line
            for line in events.splitlines()
        ):
            break
        assert time.monotonic() < deadline, "the agent's requests were not refused after detach"
        await asyncio.sleep(0.2)
    settled = len(agent_requests())
    await asyncio.sleep(1.0)
    assert len(agent_requests()) == settled, "a detached credential's request was forwarded"

    # Nothing the operator sees carries a value.
    shipped = "".join(
        [
            await shown(stack, "sandbox", "events", "box", "-o", "json"),
            await shown(stack, "sandbox", "logs", "box", "-o", "json"),
            await shown(stack, "sandbox", "config", "box", "-o", "json"),
            await shown(stack, "provider", "get", "svc", "-o", "json"),
        ]
    )
    for secret in (VALUE, NEW_VALUE, "ghp_Sandbox0Secret%26v"):
        assert secret not in shipped
    state_dir = stack.driver.state_dir(stack.driver.sandbox_ids()[0])
    assert state_dir is not None
    log = (state_dir / "supervisor.log").read_text()
    assert VALUE not in log and NEW_VALUE not in log


async def test_several_grants_and_a_stored_key_on_one_request(stack: Stack) -> None:
    port = stack.upstream.port
    grant = {
        "token_endpoint": stack.issuer.token_url,
        "jwt_svid_audience": stack.issuer.issuer,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
    }
    profile = {
        "id": "multi",
        "credentials": [
            {"name": "user", "token_grant": {**grant, "audience": "alpha"}},
            {
                "name": "api",
                "auth_style": "header",
                "header_name": "X-Api-Key",
                "token_grant": {**grant, "audience": "beta"},
            },
            {"name": "tenant", "auth_style": "header", "header_name": "X-Tenant"},
        ],
        "endpoints": [loopback(ALPHA, port)],
    }
    await ok(stack, "profile", "import", "-f", stack.gw.write("multi.yaml", profile))
    await ok(
        stack,
        "provider",
        "create",
        "--name",
        "multi",
        "--type",
        "multi",
        "--credential",
        "tenant=t-42",
    )
    await ok(
        stack,
        "sandbox", "create", "--name", "box", "--provider", "multi",
        "--policy", stack.gw.write("p.yaml", stack.policy()),
    )  # fmt: skip
    probe = (
        f"curl -sS -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer mine' "
        f"-H 'X-Api-Key: mine' http://{ALPHA}:{port}/both"
    )
    result = await cli(stack, "sandbox", "exec", "--name", "box", "--", "sh", "-c", probe)
    assert result.stdout == "200", (result.stdout, result.stderr)
    (seen,) = [r for r in stack.upstream.requests if r.target == "/both"]
    forms = stack.issuer.forms()
    audiences = [f["audience"][0] for f in forms]
    assert sorted(audiences) == ["alpha", "beta"]
    tokens = {audience: token for token, audience in stack.issuer.audience_of.items()}
    assert seen.header("authorization") == [f"Bearer {tokens['alpha']}"]
    assert seen.header("x-api-key") == [tokens["beta"]]
    assert seen.header("x-tenant") == ["t-42"]

    # A grant failing fails the request: nothing reaches the upstream, one 502 answer
    # (a second sandbox, so its grant cache is cold).
    stack.issuer.refuse_next(10)
    probe = f"curl -sS -w '\\n%{{http_code}}' http://{ALPHA}:{port}/fresh"
    await ok(
        stack,
        "sandbox", "create", "--name", "cold", "--provider", "multi",
        "--policy", stack.gw.write("p2.yaml", stack.policy()),
    )  # fmt: skip
    result = await cli(stack, "sandbox", "exec", "--name", "cold", "--", "sh", "-c", probe)
    body, _, status = result.stdout.rpartition("\n")
    assert status == "502", (result.stdout, result.stderr)
    answer = json.loads(body)
    assert answer["error"] == "token_grant_failed" and answer["reason"] == "token_endpoint_rejected"
    assert not [r for r in stack.upstream.requests if r.target == "/fresh"]
