"""Where JWT-SVIDs come from, as far as the engine is concerned.

The engine needs one thing from workload identity: a fresh JWT-SVID for an audience.
:class:`grantbox.identity.WorkloadIdentityClient` satisfies :class:`SvidSource`; tests and
other callers may pass anything with the same method.
"""

from __future__ import annotations

from typing import Protocol

from .answer import sanitise_oauth_field
from .errors import GrantError, GrantFailure, WorkloadIdentityDenied, WorkloadIdentityUnavailable

_IDENTITY_FAILURES = frozenset(
    {GrantFailure.WORKLOAD_IDENTITY_DENIED, GrantFailure.WORKLOAD_IDENTITY_UNAVAILABLE}
)


class Svid(Protocol):
    @property
    def token(self) -> str: ...


class SvidSource(Protocol):
    async def fetch_jwt_svid(self, audience: str) -> Svid: ...


def identity_failure(exc: BaseException) -> GrantError:
    """The grant error for a failed SVID fetch.

    Identity errors carry a :class:`GrantFailure` ``reason`` and a sanitised ``detail``
    (the engine sees them through the :class:`SvidSource` protocol, not by class); anything
    else is reported by type only (its message might quote what it failed on) and fails
    closed as unavailable.
    """
    reason = getattr(exc, "reason", None)
    detail = getattr(exc, "detail", None)
    if isinstance(reason, GrantFailure) and reason in _IDENTITY_FAILURES:
        text = detail if isinstance(detail, str) else str(exc)
        cleaned = sanitise_oauth_field(text) or type(exc).__name__
        if reason is GrantFailure.WORKLOAD_IDENTITY_DENIED:
            return WorkloadIdentityDenied(f"JWT-SVID fetch denied: {cleaned}")
        return WorkloadIdentityUnavailable(f"JWT-SVID fetch failed: {cleaned}")
    return WorkloadIdentityUnavailable(f"JWT-SVID fetch failed: {type(exc).__name__}")
