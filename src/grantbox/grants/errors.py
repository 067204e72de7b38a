"""Why a token grant failed: one vocabulary, one exception per DESIGN §3.4 reason.

:class:`GrantFailure` is the only list of reasons: the engine raises these exceptions, the
identity client's errors carry the same enum members, and the proxy puts the member's value
in its ``token_grant_failed`` answer.

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

from enum import StrEnum
from typing import ClassVar


class GrantFailure(StrEnum):
    """The ``reason`` of a failed grant (DESIGN §3.4), as agents and operators see it."""

    WORKLOAD_IDENTITY_UNAVAILABLE = "workload_identity_unavailable"
    WORKLOAD_IDENTITY_DENIED = "workload_identity_denied"
    TOKEN_ENDPOINT_UNREACHABLE = "token_endpoint_unreachable"  # noqa: S105 (names, not secrets)
    TOKEN_ENDPOINT_TIMEOUT = "token_endpoint_timeout"  # noqa: S105
    TOKEN_ENDPOINT_REJECTED = "token_endpoint_rejected"  # noqa: S105
    TOKEN_ENDPOINT_ERROR = "token_endpoint_error"  # noqa: S105
    TOKEN_MALFORMED = "token_malformed"  # noqa: S105
    GRANT_MISCONFIGURED = "grant_misconfigured"


class GrantError(Exception):
    """A token could not be obtained for a binding."""

    reason: ClassVar[GrantFailure] = GrantFailure.TOKEN_ENDPOINT_ERROR

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason.value!r}, detail={self.detail!r})"

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    # What the token endpoint's answer said, when there was one: its HTTP status and the
    # seconds its Retry-After asked for. Backoff reads them; callers see only the reason.
    status: int | None = None
    retry_after: float | None = None


class WorkloadIdentityUnavailable(GrantError):
    reason = GrantFailure.WORKLOAD_IDENTITY_UNAVAILABLE


class WorkloadIdentityDenied(GrantError):
    reason = GrantFailure.WORKLOAD_IDENTITY_DENIED


class TokenEndpointUnreachable(GrantError):
    reason = GrantFailure.TOKEN_ENDPOINT_UNREACHABLE


class TokenEndpointTimeout(GrantError):
    reason = GrantFailure.TOKEN_ENDPOINT_TIMEOUT


class TokenEndpointRejected(GrantError):
    reason = GrantFailure.TOKEN_ENDPOINT_REJECTED


class TokenEndpointError(GrantError):
    reason = GrantFailure.TOKEN_ENDPOINT_ERROR


class TokenMalformed(GrantError):
    reason = GrantFailure.TOKEN_MALFORMED


class GrantMisconfigured(GrantError):
    reason = GrantFailure.GRANT_MISCONFIGURED


ERRORS_BY_REASON: dict[GrantFailure, type[GrantError]] = {
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

REASONS: frozenset[GrantFailure] = frozenset(GrantFailure)
_BY_TEXT: dict[str, GrantFailure] = {member.value: member for member in GrantFailure}


def failure_of(value: object) -> GrantFailure:
    """The member for a reason (an enum member or its text); anything else fails closed as
    a token endpoint error."""
    if isinstance(value, str) and value in _BY_TEXT:
        return _BY_TEXT[value]
    return GrantFailure.TOKEN_ENDPOINT_ERROR


def error_for_reason(reason: GrantFailure | str, detail: str) -> GrantError:
    """The exception for a reason; unknown reasons fail closed as endpoint errors."""
    return ERRORS_BY_REASON[failure_of(reason)](detail)
