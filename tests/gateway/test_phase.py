"""Sandbox phase as a pure function of driver status, heartbeats and deletion."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from grantbox.drivers import DriverState
from grantbox.gateway.phase import Phase, SandboxFacts, derive_phase

NOW = 1_000_000.0
STALE = 30.0

facts = st.builds(
    SandboxFacts,
    deleting=st.booleans(),
    driver_state=st.sampled_from(DriverState),
    driver_message=st.text(max_size=10),
    last_heartbeat=st.none() | st.floats(NOW - 1000, NOW),
    supervisor_error=st.sampled_from(["", "proxy failed to start"]),
    exit_code=st.none() | st.integers(-64, 255),
    exit_reason=st.sampled_from(["", "cannot run /no/such/binary: No such file or directory"]),
)


@given(facts)
def test_deleting_wins_over_everything(f: SandboxFacts) -> None:
    phase, _ = derive_phase(f, NOW, STALE)
    assert (phase is Phase.DELETING) == f.deleting


@given(facts)
def test_a_dead_supervisor_is_never_ready(f: SandboxFacts) -> None:
    phase, reason = derive_phase(f, NOW, STALE)
    if not f.deleting and f.driver_state in (DriverState.FAILED, DriverState.EXITED):
        assert phase in (Phase.ERROR, Phase.EXITED)
        assert reason


@given(facts)
def test_only_a_clean_exit_is_exited_and_a_failure_says_why(f: SandboxFacts) -> None:
    phase, reason = derive_phase(f, NOW, STALE)
    if f.deleting:
        return
    if f.exit_code is not None:
        assert phase is (Phase.EXITED if f.exit_code == 0 else Phase.ERROR)
        assert str(abs(f.exit_code)) in reason
        if f.exit_code != 0:
            assert f.exit_reason in reason
    elif phase is Phase.EXITED:
        assert f.driver_state is DriverState.EXITED


@given(facts)
def test_ready_needs_a_fresh_heartbeat_and_no_reported_error(f: SandboxFacts) -> None:
    phase, _ = derive_phase(f, NOW, STALE)
    if phase is Phase.READY:
        assert f.last_heartbeat is not None
        assert NOW - f.last_heartbeat <= STALE
        assert not f.supervisor_error
        assert f.driver_state in (DriverState.RUNNING, DriverState.UNKNOWN)


def test_the_life_of_a_sandbox() -> None:
    start = SandboxFacts(False, DriverState.PENDING, "", None)
    assert derive_phase(start, NOW, STALE)[0] is Phase.PROVISIONING
    running = SandboxFacts(False, DriverState.RUNNING, "", None)
    assert derive_phase(running, NOW, STALE) == (Phase.PROVISIONING, "waiting for the supervisor")
    beating = SandboxFacts(False, DriverState.RUNNING, "", NOW - 1)
    assert derive_phase(beating, NOW, STALE) == (Phase.READY, "")
    silent = SandboxFacts(False, DriverState.RUNNING, "", NOW - 45)
    assert derive_phase(silent, NOW, STALE) == (
        Phase.ERROR,
        "no supervisor heartbeat for 45 s; `grantbox sandbox restart` starts it again",
    )
    gone = SandboxFacts(False, DriverState.EXITED, "", NOW - 1)
    assert derive_phase(gone, NOW, STALE) == (Phase.EXITED, "the supervisor exited with 0")
    done = SandboxFacts(False, DriverState.EXITED, "", NOW - 1, exit_code=0)
    assert derive_phase(done, NOW, STALE) == (Phase.EXITED, "the command exited with 0")
    missing = SandboxFacts(
        False, DriverState.FAILED, "supervisor exited with 127", NOW - 1, "", 127, "cannot run x"
    )
    assert derive_phase(missing, NOW, STALE) == (
        Phase.ERROR,
        "the command exited with 127: cannot run x",
    )
    killed = SandboxFacts(False, DriverState.FAILED, "", NOW - 1, exit_code=-9)
    assert derive_phase(killed, NOW, STALE) == (Phase.ERROR, "the command was killed by signal 9")
    failing = SandboxFacts(False, DriverState.RUNNING, "", NOW - 1, "proxy failed to start")
    assert derive_phase(failing, NOW, STALE) == (Phase.ERROR, "proxy failed to start")
