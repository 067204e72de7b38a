"""Why a token grant failed: one exception per DESIGN §3.4 reason.

GrantError                          .reason, .detail (sanitised; never a token, SVID or raw body)
├── WorkloadIdentityUnavailable     workload_identity_unavailable — no Workload API, no answer
├── WorkloadIdentityDenied          workload_identity_denied — the agent refused this workload
├── TokenEndpointUnreachable        token_endpoint_unreachable — connect/TLS/DNS failure
├── TokenEndpointTimeout            token_endpoint_timeout — connect or total timeout elapsed
├── TokenEndpointRejected           token_endpoint_rejected — 400/401/403 (OAuth error answer)
├── TokenEndpointError              token_endpoint_error — 5xx, 3xx, oversized or broken answer
├── TokenMalformed                  token_malformed — 2xx whose body is not a valid token answer
└── GrantMisconfigured              grant_misconfigured — the binding cannot be used as given

The proxy turns any of these into a 502 ``token_grant_failed`` carrying only ``reason``;
operators see ``detail`` in logs and events.
"""

from __future__ import annotations

from typing import ClassVar


class GrantError(Exception):
    """A token could not be obtained for a binding."""

    reason: ClassVar[str] = "token_endpoint_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, detail={self.detail!r})"

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    # What the token endpoint's answer said, when there was one: its HTTP status and the
    # seconds its Retry-After asked for. Backoff reads them; callers see only the reason.
    status: int | None = None
    retry_after: float | None = None


class WorkloadIdentityUnavailable(GrantError):
    reason = "workload_identity_unavailable"


class WorkloadIdentityDenied(GrantError):
    reason = "workload_identity_denied"


class TokenEndpointUnreachable(GrantError):
    reason = "token_endpoint_unreachable"


class TokenEndpointTimeout(GrantError):
    reason = "token_endpoint_timeout"


class TokenEndpointRejected(GrantError):
    reason = "token_endpoint_rejected"


class TokenEndpointError(GrantError):
    reason = "token_endpoint_error"


class TokenMalformed(GrantError):
    reason = "token_malformed"


class GrantMisconfigured(GrantError):
    reason = "grant_misconfigured"


ERRORS_BY_REASON: dict[str, type[GrantError]] = {
    cls.reason: cls
    for cls in (
        WorkloadIdentityUnavailable,
        WorkloadIdentityDenied,
        TokenEndpointUnreachable,
        TokenEndpointTimeout,
        TokenEndpointRejected,
        TokenEndpointError,
        TokenMalformed,
        GrantMisconfigured,
    )
}

REASONS: frozenset[str] = frozenset(ERRORS_BY_REASON)


def error_for_reason(reason: str, detail: str) -> GrantError:
    """The exception for a reason string; unknown reasons fail closed as endpoint errors."""
    return ERRORS_BY_REASON.get(reason, TokenEndpointError)(detail)
