"""How the stage and init behave as processes: status, signals, orphans, what is inherited."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import pytest

from grantbox.sandbox.launcher import launch
from tests.support.sandbox_residue import pids_mentioning
from tests.support.sandbox_run import SandboxRunner

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


@pytest.mark.parametrize(("script", "code"), [("exit 42", 42), ("kill -TERM $$", 128 + 15)])
async def test_status_is_the_commands(runner: SandboxRunner, script: str, code: int) -> None:
    assert (await runner.sh(script)).code == code


async def test_command_not_found_is_127(runner: SandboxRunner) -> None:
    result = await runner.run(["/nonexistent/tool"])
    assert result.code == 127
    assert "cannot run /nonexistent/tool" in result.err


async def test_sigterm_reaches_the_agent(runner: SandboxRunner) -> None:
    script = "trap 'echo got-term; exit 5' TERM; echo up; sleep 100 & wait"
    process = await launch(
        runner.spec(["/bin/sh", "-c", script]),
        runner.network,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 20) == b"up\n"
    process.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    assert out == b"got-term\n"
    assert process.returncode == 5


async def test_orphans_are_reaped(runner: SandboxRunner) -> None:
    script = "for i in 1 2 3; do (sleep 0.1 &); done; sleep 1; ps -eo stat= | grep -c '^Z'"
    result = await runner.sh(script)
    assert result.out.strip() == "0", result


async def test_agent_inherits_no_descriptor_capability_or_privilege(runner: SandboxRunner) -> None:
    result = await runner.sh(
        "ls /proc/self/fd | sort -n | tr '\\n' ' '; echo;"
        " grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Uid)' /proc/self/status"
    )
    assert result.code == 0, result
    fds, *status = result.out.splitlines()
    assert fds.split() == ["0", "1", "2", "3"]  # 3 is ls's own directory handle
    fields = dict(line.split(":", 1) for line in status)
    assert fields["CapEff"].strip() == fields["CapPrm"].strip() == "0000000000000000"
    assert fields["CapAmb"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Uid"].split() == ["65534"] * 4


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.6, 1.0])
async def test_sigterm_at_any_moment_of_start_up_stops_everything(
    runner: SandboxRunner, delay: float
) -> None:
    marker = f"early-{uuid.uuid4().hex}"
    script = f"trap 'exit 5' TERM; sleep 100 & wait; : {marker}"
    process = await launch(runner.spec(["/bin/sh", "-c", script]), runner.network)
    await asyncio.sleep(delay)
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), 20)
    assert code in (-signal.SIGTERM, 5, 128 + signal.SIGTERM)
    assert pids_mentioning(marker) == set()
