"""The whole local flow with real parts: gateway, identity agent, local driver, supervisor,
fence, proxy, token endpoint and upstream. Each sandbox runs `curl` as its agent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.proxy_upstream import SeenRequest
from tests.support.sandbox_stack import Stack, running_stack

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


async def cli(stack: Stack, *args: str) -> object:
    return await asyncio.to_thread(stack.gw.run, *args)


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.05)


def pids_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


async def create_polling_sandbox(stack: Stack, name: str) -> str:
    policy = stack.gw.write(f"{name}-policy.yaml", stack.policy())
    loop = (
        f"while :; do echo tick-{name}; curl -s -o /dev/null {stack.alpha_url}/agent/$$;"
        " sleep 0.1; done"
    )
    created = await asyncio.to_thread(
        stack.gw.json, "sandbox", "create", "--name", name, "--policy", policy,
        "--", "sh", "-c", loop,
    )  # fmt: skip
    sandbox_id = str(created["id"])
    await until(
        lambda: any(r.target.startswith("/agent/") for r in stack.upstream.requests),
        20,
        "the agent's first request through the proxy",
    )
    return sandbox_id


async def test_attach_exec_logs_and_delete(stack: Stack) -> None:
    sandbox_id = await create_polling_sandbox(stack, "box")
    state_dir = stack.driver.state_dir(sandbox_id)
    assert state_dir is not None
    token_file = state_dir / "supervisor-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert state_dir.stat().st_mode & 0o777 == 0o700
    assert sandbox_id in stack.agent.workloads()
    first = next(r for r in stack.upstream.requests if r.target.startswith("/agent/"))
    assert first.header("authorization") == []

    stack.gw.ok("profile", "import", "-f", stack.gw.write("alpha.yaml", stack.profile()))
    stack.gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    seen_before = len(stack.upstream.requests)
    attach = await cli(stack, "sandbox", "attach", "--name", "box", "--provider", "pa")
    assert attach.exit_code == 0  # type: ignore[attr-defined]

    def with_token() -> bool:
        return any(r.header("authorization") for r in stack.upstream.requests[seen_before:])

    # A deadline for a loaded machine, not a speed claim: the agent's loop is never restarted.
    await until(with_token, 30, "a token on the next request after attach")
    authorized = next(r for r in stack.upstream.requests[seen_before:] if r.header("authorization"))
    assert authorized.header("authorization") == [f"Bearer {stack.issuer.issued[-1]}"]
    assert authorized.target == first.target, "the agent was restarted"
    assert stack.issuer.subjects[-1] == f"spiffe://example.org/grantbox/sandbox/{sandbox_id}"

    script = f"echo out; echo err >&2; curl -s -o /dev/null {stack.alpha_url}/exec; exit 7"
    result = await cli(stack, "sandbox", "exec", "--name", "box", "--", "sh", "-c", script)
    assert result.exit_code == 7, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    assert result.stdout.strip() == "out"  # type: ignore[attr-defined]
    assert "err" in result.stderr  # type: ignore[attr-defined]
    exec_request = next(r for r in stack.upstream.requests if r.target == "/exec")
    assert exec_request.header("authorization"), "exec runs under the same policy and grants"

    gateway_port = stack.gw.url.rsplit(":", 1)[1]
    probe = (
        f"curl -sS --max-time 3 --noproxy '*' http://127.0.0.1:{gateway_port}/ && exit 10;"
        f" ls -A {stack.socket_dir}; ls {state_dir} && exit 11;"
        " ps -eo args | grep -c '[s]upervisor run'; env | grep -ci -e spiffe -e grantbox"
    )
    probed = await cli(stack, "sandbox", "exec", "--name", "box", "--", "sh", "-c", probe)
    assert probed.exit_code == 1, (probed.stdout, probed.stderr)  # type: ignore[attr-defined]
    assert probed.stdout.split() == ["0", "0"]  # type: ignore[attr-defined]
    assert "Couldn't connect" in probed.stderr  # type: ignore[attr-defined]

    await until(
        lambda: "tick-box" in stack.gw.run("sandbox", "logs", "box").stdout, 10, "shipped logs"
    )

    def shipped_events() -> str:
        return str(stack.gw.run("sandbox", "events", "box", "-o", "json").stdout)

    await until(lambda: "alpha.localhost" in shipped_events(), 10, "shipped OCSF events")
    shipped = shipped_events() + stack.gw.run("sandbox", "logs", "box", "-o", "json").stdout
    assert not [token for token in stack.issuer.issued if token in shipped]
    log_file = state_dir / "supervisor.log"
    assert not [token for token in stack.issuer.issued if token in log_file.read_text()]

    detach = await cli(stack, "sandbox", "detach", "--name", "box", "--provider", "pa")
    assert detach.exit_code == 0  # type: ignore[attr-defined]
    detached_at = len(stack.upstream.requests)

    def agent_requests_since_detach() -> list[SeenRequest]:
        return [r for r in stack.upstream.requests[detached_at:] if r.target == first.target]

    await until(
        lambda: any(not r.header("authorization") for r in agent_requests_since_detach()),
        30,
        "no token on the next request after detach",
    )
    await asyncio.sleep(0.5)
    latest = agent_requests_since_detach()[-1]
    assert latest.header("authorization") == [], "a detached provider's token was still sent"

    supervisor = stack.driver.supervisor_pid(sandbox_id)
    assert supervisor is not None
    await cli(stack, "sandbox", "delete", "box")
    assert stack.driver.sandbox_ids() == []
    assert not state_dir.exists()
    assert sandbox_id not in stack.agent.workloads()
    assert not Path(f"/proc/{supervisor}").exists()
    assert pids_with("tick-box") == []


async def test_killing_the_supervisor_kills_the_agent(stack: Stack) -> None:
    sandbox_id = await create_polling_sandbox(stack, "doomed")
    supervisor = stack.driver.supervisor_pid(sandbox_id)
    assert supervisor is not None
    assert pids_with("tick-doomed"), "the agent should be running"
    os.kill(supervisor, signal.SIGKILL)
    killed_at = time.monotonic()
    while pids_with("tick-doomed") and time.monotonic() - killed_at < 2.0:
        await asyncio.sleep(0.05)
    assert pids_with("tick-doomed") == []
    await until(
        lambda: "error" in stack.gw.run("sandbox", "get", "doomed").stdout.lower(),
        10,
        "the driver reporting the dead supervisor",
    )
