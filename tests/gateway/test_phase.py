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
)


@given(facts)
def test_deleting_wins_over_everything(f: SandboxFacts) -> None:
    phase, _ = derive_phase(f, NOW, STALE)
    assert (phase is Phase.DELETING) == f.deleting


@given(facts)
def test_a_dead_supervisor_is_never_ready(f: SandboxFacts) -> None:
    phase, reason = derive_phase(f, NOW, STALE)
    if not f.deleting and f.driver_state in (DriverState.FAILED, DriverState.EXITED):
        assert phase is Phase.ERROR
        assert reason


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
    assert derive_phase(silent, NOW, STALE) == (Phase.ERROR, "no supervisor heartbeat for 45 s")
    gone = SandboxFacts(False, DriverState.EXITED, "", NOW - 1)
    assert derive_phase(gone, NOW, STALE) == (Phase.ERROR, "supervisor exited")
    failing = SandboxFacts(False, DriverState.RUNNING, "", NOW - 1, "proxy failed to start")
    assert derive_phase(failing, NOW, STALE) == (Phase.ERROR, "proxy failed to start")
