"""How long a token is served, when it is renewed, and how long a failure is remembered.

All times are seconds; callers add them to the engine's monotonic clock.
"""

from __future__ import annotations

DEFAULT_EXPIRES_IN = 300
MAX_EXPIRES_IN = 3600
EXPIRY_SKEW = 30
MIN_TTL = 1
REFRESH_AHEAD_FRACTION = 0.1
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
BACKOFF_JITTER = 0.2


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


def backoff_delay(failures: int, jitter: float) -> float:
    """Seconds to remember the ``failures``-th consecutive failure before asking again.

    Exponential from 1 s to 30 s; ``jitter`` in [0, 1) shortens each step by up to 20 %
    so that many keys failing together do not retry in lockstep.
    """
    if failures < 1:
        raise ValueError("failures must be at least 1")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    nominal = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** min(failures - 1, 32))
    return nominal * (1.0 - BACKOFF_JITTER * jitter)
