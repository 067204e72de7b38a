"""TTL, refresh-ahead and backoff arithmetic (DESIGN §3.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.grants import Persistence, backoff_delay, cache_ttl, persistence, refresh_after


@pytest.mark.parametrize(
    ("expires_in", "configured", "ttl"),
    [
        # derived: min(expires_in, 3600) - 30, 300 when absent, floor 1
        (None, 0, 270),
        (300, 0, 270),
        (60, 0, 30),
        (31, 0, 1),
        (30, 0, 1),
        (10, 0, 1),
        (1, 0, 1),
        (3600, 0, 3570),
        (7200, 0, 3570),
        (2**63 - 1, 0, 3570),
        # explicit cache_ttl_seconds shortens...
        (300, 60, 60),
        (3600, 120, 120),
        (None, 60, 60),
        # ...and may exceed the derived value, but never the token's own expires_in
        (60, 50, 50),
        (60, 60, 60),
        (10, 120, 10),
        (300, 86400, 300),
        (7200, 5000, 5000),
        # negative configuration is treated as "derive" (validation rejects it earlier)
        (300, -5, 270),
    ],
)
def test_cache_ttl_table(expires_in: int | None, configured: int, ttl: int) -> None:
    assert cache_ttl(expires_in, configured) == ttl


@given(
    st.one_of(st.none(), st.integers(min_value=1, max_value=10**12)),
    st.integers(min_value=-10, max_value=10**12),
)
def test_cache_ttl_never_outlives_the_token(expires_in: int | None, configured: int) -> None:
    ttl = cache_ttl(expires_in, configured)
    assert ttl >= 1
    if expires_in is not None:
        assert ttl <= expires_in
    if configured <= 0:
        assert ttl <= 3570


@pytest.mark.parametrize(("ttl", "after"), [(100, 90), (270, 243), (1, 0.9), (3570, 3213)])
def test_refresh_starts_in_the_last_tenth(ttl: float, after: float) -> None:
    assert refresh_after(ttl) == pytest.approx(after)


@pytest.mark.parametrize(
    ("failures", "jitter", "delay"),
    [
        (1, 0.0, 1.0),
        (2, 0.0, 2.0),
        (3, 0.0, 4.0),
        (5, 0.0, 16.0),
        (6, 0.0, 30.0),
        (100, 0.0, 30.0),
        (10**9, 0.0, 30.0),
        (1, 0.5, 0.9),
        (6, 0.5, 27.0),
    ],
)
def test_backoff_table(failures: int, jitter: float, delay: float) -> None:
    assert backoff_delay(failures, jitter) == pytest.approx(delay)


@given(st.integers(min_value=1, max_value=10**6), st.floats(min_value=0.0, max_value=0.999))
def test_backoff_stays_between_one_and_thirty_seconds(failures: int, jitter: float) -> None:
    delay = backoff_delay(failures, jitter)
    assert 0.8 <= delay <= 30.0
    assert delay <= backoff_delay(failures + 1, 0.0)


@given(st.integers(min_value=1, max_value=64), st.floats(min_value=0.0, max_value=0.999))
def test_two_failures_can_never_happen_within_one_backoff_step(
    failures: int, jitter: float
) -> None:
    # The first retry waits at least 0.8 s, the next at least 1.6 s: a burst within one
    # second sees at most two requests.
    assert backoff_delay(failures, jitter) + backoff_delay(failures + 1, jitter) > 1.0


@pytest.mark.parametrize(("failures", "jitter"), [(0, 0.0), (-1, 0.0), (1, 1.0), (1, -0.1)])
def test_backoff_rejects_nonsense(failures: int, jitter: float) -> None:
    with pytest.raises(ValueError, match="must"):
        backoff_delay(failures, jitter)


# -- transient versus permanent failures, and Retry-After -----------------------------------

T, P = Persistence.TRANSIENT, Persistence.PERMANENT


@pytest.mark.parametrize(
    ("reason", "status", "kind"),
    [
        ("token_endpoint_unreachable", None, T),
        ("token_endpoint_timeout", None, T),
        ("workload_identity_unavailable", None, T),
        ("workload_identity_denied", None, T),  # the spec: not registered *yet*, retry
        ("token_endpoint_error", 500, T),
        ("token_endpoint_error", 502, T),
        ("token_endpoint_error", 503, T),
        ("token_endpoint_error", 429, T),
        ("token_endpoint_error", 408, T),
        ("token_endpoint_error", None, T),  # connection dropped mid-answer
        ("token_endpoint_error", 302, P),  # a redirect: the URL is wrong
        ("token_endpoint_error", 404, P),
        ("token_endpoint_error", 405, P),
        ("token_endpoint_rejected", 400, P),  # invalid_scope, invalid_request, invalid_target
        ("token_endpoint_rejected", 401, P),  # invalid_client
        ("token_endpoint_rejected", 403, P),
        ("token_malformed", 200, P),
        ("grant_misconfigured", None, P),
        ("something_new", None, P),  # unknown reasons are not retried eagerly
    ],
)
def test_persistence_table(reason: str, status: int | None, kind: Persistence) -> None:
    assert persistence(reason, status) is kind


@pytest.mark.parametrize(
    ("failures", "jitter", "delay"),
    [
        (1, 0.0, 15.0),
        (2, 0.0, 30.0),
        (3, 0.0, 60.0),
        (5, 0.0, 240.0),
        (6, 0.0, 300.0),
        (10**9, 0.0, 300.0),
        (1, 0.5, 13.5),
        (6, 0.5, 270.0),
    ],
)
def test_permanent_backoff_table(failures: int, jitter: float, delay: float) -> None:
    assert backoff_delay(failures, jitter, Persistence.PERMANENT) == pytest.approx(delay)


@pytest.mark.parametrize(
    ("kind", "failures", "retry_after", "delay"),
    [
        (T, 1, 120.0, 120.0),  # honoured: longer than the backoff step
        (T, 1, 0.5, 1.0),  # never shorter than the backoff step
        (T, 1, 0.0, 1.0),
        (T, 1, 86400.0, 300.0),  # bounded
        (T, 6, 10.0, 30.0),
        (P, 1, 60.0, 60.0),
        (P, 6, 1000.0, 300.0),
        (T, 1, None, 1.0),
    ],
)
def test_retry_after_table(
    kind: Persistence, failures: int, retry_after: float | None, delay: float
) -> None:
    assert backoff_delay(failures, 0.0, kind, retry_after) == pytest.approx(delay)


@given(
    st.integers(min_value=1, max_value=10**6),
    st.floats(min_value=0.0, max_value=0.999),
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e12)),
)
def test_backoff_honours_retry_after_within_bounds(
    failures: int, jitter: float, retry_after: float | None
) -> None:
    transient = backoff_delay(failures, jitter, T, retry_after)
    permanent = backoff_delay(failures, jitter, P, retry_after)
    assert 0.8 <= transient <= 300.0
    assert 12.0 <= permanent <= 300.0
    assert transient <= permanent
    if retry_after is not None:
        assert transient >= min(retry_after, 300.0)
