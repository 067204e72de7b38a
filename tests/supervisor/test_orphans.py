"""A sandbox the gateway no longer knows gets no token and is torn down (DESIGN §3.5 #10).

Real parts: gateway, identity agent, local driver, supervisor, fence, proxy, token endpoint
and upstream. The agent ignores SIGTERM, so it keeps making requests while its supervisor
tears down: every one of them must be refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from grantbox.drivers import LocalDriver, LocalDriverSettings
from grantbox.drivers.local import PID_FILE
from tests.support.proxy_workers import is_worker, proxy_workers_of
from tests.support.sandbox_stack import Stack, running_stack

ORPHAN_LINE = "refusing all traffic and tearing the sandbox down"


@pytest.fixture(params=[1, 2], ids=["proxy-in-supervisor", "2-proxy-workers"])
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, proxy_workers=request.param) as running:
        yield running


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


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
async def test_a_sandbox_whose_record_disappears_gets_no_token_and_is_torn_down(
    stack: Stack,
) -> None:
    stack.gw.ok("profile", "import", "-f", stack.gw.write("alpha.yaml", stack.profile()))
    stack.gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    agent = (
        f"trap '' TERM; while :; do curl -s -o /dev/null {stack.alpha_url}/orphan-probe;"
        " sleep 0.1; done"
    )
    created = await asyncio.to_thread(
        stack.gw.json, "sandbox", "create", "--name", "lost", "--provider", "pa",
        "--", "sh", "-c", agent,
    )  # fmt: skip
    sandbox_id = str(created["id"])

    def authorized() -> list[str]:
        return [
            r.header("authorization")[0]
            for r in stack.upstream.requests
            if r.target == "/orphan-probe" and r.header("authorization")
        ]

    await until(lambda: bool(authorized()), 30, "a token-bearing request from the agent")
    supervisor = stack.driver.supervisor_pid(sandbox_id)
    state_dir = stack.driver.state_dir(sandbox_id)
    assert supervisor is not None and state_dir is not None
    log_file = state_dir / "supervisor.log"
    workers = proxy_workers_of(supervisor)
    assert len(workers) == (0 if stack.driver.settings.proxy_workers == 1 else 2)

    # The record goes away behind the supervisor's back (no delete call, no notification).
    await asyncio.to_thread(stack.server.gateway.sandboxes.remove, sandbox_id)
    await until(lambda: ORPHAN_LINE in read(log_file), 30, "the supervisor noticing")
    upstream_seen = len(stack.upstream.requests)
    token_requests = stack.issuer.request_count
    assert pids_with("orphan-probe"), "the agent (ignoring SIGTERM) is still running"

    await until(lambda: not Path(f"/proc/{supervisor}").exists(), 30, "the supervisor exiting")
    await until(lambda: not pids_with("orphan-probe"), 10, "the agent being killed")
    await until(lambda: not any(map(is_worker, workers)), 10, "the proxy workers ending")
    # At most the one request the sequential agent had in flight when the line was written.
    assert len(stack.upstream.requests) - upstream_seen <= 1
    assert stack.issuer.request_count == token_requests
    # The driver cleaned up what it kept for the sandbox.
    await until(lambda: stack.driver.sandbox_ids() == [], 10, "the driver forgetting it")
    assert not state_dir.exists()
    assert sandbox_id not in stack.agent.workloads()


def _leftover(root: Path, sandbox_id: str, argv: list[str]) -> subprocess.Popen[bytes]:
    directory = root / sandbox_id
    directory.mkdir(parents=True, mode=0o700)
    process = subprocess.Popen(argv)
    deadline = time.monotonic() + 10
    while argv[-1].encode() not in Path(f"/proc/{process.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the leftover process did not start"
        time.sleep(0.01)
    (directory / PID_FILE).write_text(f"{process.pid}\n")
    return process


async def test_leftover_supervisors_are_reaped_and_strangers_are_not_touched(
    tmp_path: Path,
) -> None:
    root = tmp_path / "sandboxes"
    sleeper = "import time; time.sleep(60)"
    leftover = _leftover(
        root, "s1", [sys.executable, "-c", sleeper, "supervisor", "run", "--sandbox-id", "s1"]
    )
    stranger = _leftover(root, "s2", [sys.executable, "-c", sleeper, "--sandbox-id", "s2"])
    try:
        driver = LocalDriver(
            LocalDriverSettings(state_root=root, identity_admin_socket=tmp_path / "none.sock")
        )
        assert sorted(await driver.reap()) == ["s1", "s2"]
        assert leftover.wait(timeout=10) == -9
        assert stranger.poll() is None, "a process that is not that supervisor was killed"
        assert sorted(os.listdir(root)) == []
        # delete() of a sandbox this driver never ran still removes what is left of it.
        again = _leftover(
            root, "s3", [sys.executable, "-c", sleeper, "supervisor", "run", "--sandbox-id", "s3"]
        )
        await driver.delete("s3")
        assert again.wait(timeout=10) == -9
        assert not (root / "s3").exists()
    finally:
        for process in (leftover, stranger):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
