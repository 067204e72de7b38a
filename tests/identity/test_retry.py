"""The retry schedule and the failure mapping are pure; test them on their own."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.identity import Backoff, IdentityDenied, IdentityUnavailable
from grantbox.identity.retry import (
    MAX_DETAIL,
    MIN_ATTEMPT_BUDGET,
    error_for_status,
    is_retryable,
    next_wait,
    sanitise_detail,
)

ALL_CODES = [code.name for code in grpc.StatusCode]
jitters = st.floats(min_value=0.0, max_value=1.0)
attempts = st.integers(min_value=0, max_value=10_000)


@given(attempts, jitters)
def test_delay_stays_within_half_and_full_ceiling(attempt: int, jitter: float) -> None:
    backoff = Backoff(base=0.05, factor=2.0, cap=1.0)
    ceiling = min(1.0, 0.05 * 2.0 ** min(attempt, 64))
    delay = backoff.delay(attempt, jitter)
    assert ceiling / 2 - 1e-12 <= delay <= ceiling + 1e-12
    assert delay <= backoff.cap


@given(attempts, jitters)
def test_ceiling_never_shrinks(attempt: int, jitter: float) -> None:
    backoff = Backoff()
    assert backoff.delay(attempt + 1, 1.0) >= backoff.delay(attempt, 1.0)
    assert backoff.delay(attempt, 0.0) <= backoff.delay(attempt, jitter)


def test_schedule_grows_then_caps() -> None:
    backoff = Backoff(base=0.1, factor=2.0, cap=1.0)
    assert [backoff.delay(n, 1.0) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.delay(3, 0.0) == pytest.approx(0.4)


@pytest.mark.parametrize(("attempt", "jitter"), [(-1, 0.5), (0, -0.1), (0, 1.5)])
def test_invalid_inputs_are_errors(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError, match=r"attempt|jitter"):
        Backoff().delay(attempt, jitter)


@given(attempts, jitters, st.floats(min_value=-5.0, max_value=20.0))
def test_next_wait_leaves_room_for_one_more_attempt(
    attempt: int, jitter: float, remaining: float
) -> None:
    wait = next_wait(Backoff(), attempt, jitter, remaining)
    if remaining <= MIN_ATTEMPT_BUDGET:
        assert wait is None
    else:
        assert wait is not None
        assert 0 <= wait <= remaining - MIN_ATTEMPT_BUDGET
        assert wait <= Backoff().delay(attempt, jitter)


def test_retryable_codes_follow_the_spec() -> None:
    assert is_retryable("UNAVAILABLE")
    assert is_retryable("PERMISSION_DENIED")
    assert is_retryable("DEADLINE_EXCEEDED")
    assert not is_retryable("INVALID_ARGUMENT")
    assert not is_retryable("UNIMPLEMENTED")
    assert {c for c in ALL_CODES if is_retryable(c)} == {
        "UNAVAILABLE",
        "PERMISSION_DENIED",
        "DEADLINE_EXCEEDED",
    }


@pytest.mark.parametrize("code", ALL_CODES)
def test_every_status_maps_to_a_design_reason(code: str) -> None:
    error = error_for_status(code, "some detail", "/run/agent.sock")
    expected = (
        IdentityDenied if code in ("PERMISSION_DENIED", "UNAUTHENTICATED") else IdentityUnavailable
    )
    assert type(error) is expected
    assert error.reason in ("workload_identity_unavailable", "workload_identity_denied")
    assert code in error.detail and "/run/agent.sock" in error.detail


def test_reasons_are_the_design_codes() -> None:
    assert IdentityUnavailable("x").reason == "workload_identity_unavailable"
    assert IdentityDenied("x").reason == "workload_identity_denied"


JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzcGlmZmU6Ly90ZC94In0.c2lnbmF0dXJl"


def test_detail_never_carries_a_jwt() -> None:
    detail = sanitise_detail(f"bad token {JWT} here")
    assert "eyJ" not in detail and "[redacted]" in detail
    error = error_for_status("INTERNAL", f"echo {JWT}", "/s")
    assert JWT not in str(error) and "eyJ" not in error.detail


@given(st.text(max_size=2000))
def test_detail_is_bounded_printable_ascii(text: str) -> None:
    detail = sanitise_detail(text)
    assert len(detail) <= MAX_DETAIL
    assert all(0x20 <= ord(ch) <= 0x7E for ch in detail)
