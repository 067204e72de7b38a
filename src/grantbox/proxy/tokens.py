"""What the proxy needs from the grants engine, and how its answers become a header.

The proxy depends on this small protocol rather than on the engine class, so a supervisor
can hand in :class:`grantbox.grants.GrantEngine` and unit tests can hand in a recording
source. Failures are mapped to a DESIGN §3.4 reason by :func:`grant_failure_reason`.
"""

from __future__ import annotations

import re
from typing import Protocol

from grantbox.profiles import BindingSet, GrantBinding, header_name_problem

from .answers import GRANT_FAILURE_REASONS

# RFC 6750 token68: what a bearer token may look like, and therefore all a header may get.
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


class AccessTokenLike(Protocol):
    @property
    def value(self) -> str: ...


class TokenSource(Protocol):
    async def obtain(self, binding: GrantBinding) -> AccessTokenLike: ...

    def replace_bindings(self, bindings: BindingSet) -> None: ...


class InjectionError(Exception):
    """The token or the binding cannot be turned into a safe header."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def grant_failure_reason(exc: BaseException) -> str:
    """The §3.4 reason for a failed grant. Anything unrecognised is a token endpoint error
    (fail closed, and never echo what the exception said)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason in GRANT_FAILURE_REASONS:
        return reason
    return "token_endpoint_error"


def credential_header(binding: GrantBinding, token: str) -> tuple[str, str]:
    """``(name, value)`` of the header carrying ``token`` as the binding places it.

    Checked again here, whatever the engine did: a token that is not token68 could carry
    CR/LF into the request, and a framing header name could smuggle one.
    """
    if not _TOKEN68.fullmatch(token):
        raise InjectionError("token_malformed", "access token is not token68")
    problem = header_name_problem(binding.header_name)
    if problem is not None:
        raise InjectionError("grant_misconfigured", problem)
    if binding.header_style not in ("bearer", "header"):
        raise InjectionError(
            "grant_misconfigured", f"auth style '{binding.header_style}' cannot carry a grant"
        )
    return binding.header_name, binding.header_value(token)
