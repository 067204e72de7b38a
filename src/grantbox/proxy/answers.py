"""Answers the proxy makes itself (DESIGN §3.4): JSON, ``Connection: close``, stable codes.

Pure: a code (and for grant failures a reason) in, the exact response bytes out. Nothing
that came from a token service, no token and no SVID can reach these bytes: the only
variable inputs are the code, a reason from a fixed list, and the target host:port the
agent itself asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus

from grantbox.grants import GrantFailure


class ErrorCode(StrEnum):
    """The ``error`` field of every proxy-made answer."""

    POLICY_DENIED = "policy_denied"
    SSRF_DENIED = "ssrf_denied"
    CLEARTEXT_CREDENTIAL_REFUSED = "cleartext_credential_refused"
    INVALID_REQUEST = "invalid_request"
    TOKEN_GRANT_FAILED = "token_grant_failed"  # noqa: S105 (an error code, not a secret)
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    CONNECTION_LIMIT_REACHED = "connection_limit_reached"
    CREDENTIAL_ENDPOINT_MISMATCH = "credential_endpoint_mismatch"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.POLICY_DENIED: 403,
    ErrorCode.SSRF_DENIED: 403,
    ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED: 403,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.TOKEN_GRANT_FAILED: 502,
    ErrorCode.UPSTREAM_UNREACHABLE: 502,
    ErrorCode.CONNECTION_LIMIT_REACHED: 503,
    ErrorCode.CREDENTIAL_ENDPOINT_MISMATCH: 403,
}

_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.POLICY_DENIED: "the sandbox policy does not allow this request",
    ErrorCode.SSRF_DENIED: "the destination address is not allowed",
    ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED: (
        "this destination needs a credential, which is only sent over TLS; use https"
    ),
    ErrorCode.INVALID_REQUEST: "the request is malformed or ambiguous",
    ErrorCode.TOKEN_GRANT_FAILED: "a token for this destination could not be obtained",
    ErrorCode.UPSTREAM_UNREACHABLE: "the destination could not be reached",
    ErrorCode.CONNECTION_LIMIT_REACHED: (
        "the sandbox has too many connections open to the proxy; close some and retry"
    ),
    ErrorCode.CREDENTIAL_ENDPOINT_MISMATCH: (
        "the request carries a credential placeholder where that credential is not bound; "
        "send it only to its provider's endpoints"
    ),
}


@dataclass(frozen=True, slots=True)
class ProxyAnswer:
    """An answer the proxy makes itself; carries only safe data (``detail`` is for
    operators: logs and events, never the answer's bytes)."""

    code: ErrorCode
    reason: GrantFailure | None = None
    status: int = 0  # 0: the code's status
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason is not None and not isinstance(self.reason, GrantFailure):
            raise ValueError(f"unknown grant failure reason {self.reason!r}")
        if not self.status:
            object.__setattr__(self, "status", STATUS[self.code])

    def to_bytes(self, target: str = "") -> bytes:
        return answer_bytes(self.code, reason=self.reason, status=self.status, target=target)


def answer_body(code: ErrorCode, *, reason: GrantFailure | None = None, target: str = "") -> bytes:
    body: dict[str, str] = {"error": str(code)}
    if reason is not None:
        if not isinstance(reason, GrantFailure):
            raise ValueError(f"unknown grant failure reason {reason!r}")
        body["reason"] = reason.value
    body["message"] = _MESSAGES[code]
    if target:
        body["target"] = target
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()


def answer_bytes(
    code: ErrorCode,
    *,
    reason: GrantFailure | None = None,
    status: int | None = None,
    target: str = "",
) -> bytes:
    """A complete HTTP/1.1 response the proxy sends on its own behalf, then closes."""
    status = status or STATUS[code]
    body = answer_body(code, reason=reason, target=_safe_target(target))
    phrase = HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


def _safe_target(target: str) -> str:
    """The agent's own host:port, echoed only when it is printable ASCII and short."""
    if len(target) > 300 or not all(0x21 <= ord(c) < 0x7F for c in target):
        return ""
    return target


CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
