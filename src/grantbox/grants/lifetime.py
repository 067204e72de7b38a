"""How long a token is served, when it is renewed, and how long a failure is remembered.

All times are seconds; callers add them to the engine's monotonic clock.

Failures come in two kinds. A *transient* one (the endpoint unreachable, slow, answering 5xx
or 429, the Workload API unavailable) may heal any moment, so it is retried soon: 1 s
doubling to 30 s. A *permanent* one (the endpoint refused this client or request with a 4xx,
answered with something that is not a usable token, the binding cannot work as configured)
will not heal until someone changes something, so asking again quickly only hammers the
issuer: 15 s doubling to 5 min. Both are shortened by up to 20 % of jitter so keys failing
together do not retry in lockstep. A ``Retry-After`` the endpoint sent is honoured (never
asked again sooner), bounded to 5 min so a hostile or broken value cannot park a binding.
"""

from __future__ import annotations

import enum

DEFAULT_EXPIRES_IN = 300
MAX_EXPIRES_IN = 3600
EXPIRY_SKEW = 30
MIN_TTL = 1
REFRESH_AHEAD_FRACTION = 0.1
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
PERMANENT_BACKOFF_FIRST = 15.0
PERMANENT_BACKOFF_MAX = 300.0
BACKOFF_JITTER = 0.2
RETRY_AFTER_MAX = 300.0

# Reasons that say nothing about this client being wrong: the next attempt may succeed.
_TRANSIENT_REASONS = frozenset(
    {
        "workload_identity_unavailable",
        "workload_identity_denied",  # the spec's PermissionDenied: not registered *yet*
        "token_endpoint_unreachable",
        "token_endpoint_timeout",
    }
)
# Statuses of a token_endpoint_error that are worth asking again soon.
_TRANSIENT_STATUSES = frozenset({408, 425, 429})


class Persistence(enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


def cache_ttl(expires_in: int | None, cache_ttl_seconds: int = 0) -> int:
    """Seconds a token is served from the cache.

    Derived: ``min(expires_in, 3600) − 30`` (300 when the answer has no ``expires_in``),
    at least 1. An explicit ``cache_ttl_seconds`` (> 0) replaces the derived value but is
    capped at the token's own ``expires_in``: configuration may shorten a token's life in
    the cache, never serve it after the issuer said it expires.
    """
    if cache_ttl_seconds > 0:
        ttl = cache_ttl_seconds if expires_in is None else min(cache_ttl_seconds, expires_in)
    else:
        base = DEFAULT_EXPIRES_IN if expires_in is None else min(expires_in, MAX_EXPIRES_IN)
        ttl = base - EXPIRY_SKEW
    return max(ttl, MIN_TTL)


def refresh_after(ttl: float) -> float:
    """Seconds after storing at which a token enters its last 10 % and is renewed."""
    return ttl * (1.0 - REFRESH_AHEAD_FRACTION)


def persistence(reason: str, status: int | None = None) -> Persistence:
    """Whether a failure (its DESIGN §3.4 reason and the HTTP status, if any) may heal soon.

    ``token_endpoint_error`` is transient for 5xx, 408, 425, 429 and failures without a
    status (a connection dropped mid-answer); a redirect or another 4xx (a wrong URL)
    is permanent. Rejections, malformed tokens and misconfiguration are permanent.
    """
    if reason in _TRANSIENT_REASONS:
        return Persistence.TRANSIENT
    endpoint_error = reason == "token_endpoint_error"
    if endpoint_error and (status is None or status >= 500 or status in _TRANSIENT_STATUSES):
        return Persistence.TRANSIENT
    return Persistence.PERMANENT


def backoff_delay(
    failures: int,
    jitter: float,
    kind: Persistence = Persistence.TRANSIENT,
    retry_after: float | None = None,
) -> float:
    """Seconds to remember the ``failures``-th consecutive failure before asking again.

    Exponential from 1 s to 30 s for transient failures and from 15 s to 300 s for
    permanent ones; ``jitter`` in [0, 1) shortens each step by up to 20 %. ``retry_after``
    (seconds the endpoint asked for) raises the delay to at least that, at most 300 s.
    """
    if failures < 1:
        raise ValueError("failures must be at least 1")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    if kind is Persistence.PERMANENT:
        first, cap = PERMANENT_BACKOFF_FIRST, PERMANENT_BACKOFF_MAX
    else:
        first, cap = BACKOFF_FIRST, BACKOFF_MAX
    delay = min(cap, first * 2.0 ** min(failures - 1, 32)) * (1.0 - BACKOFF_JITTER * jitter)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX))
    return delay
