"""Answers the proxy makes itself (DESIGN §3.4): JSON, ``Connection: close``, stable codes.

Pure: a code (and for grant failures a reason) in, the exact response bytes out. Nothing
that came from a token service, no token and no SVID can reach these bytes: the only
variable inputs are the code, a reason from a fixed list, and the target host:port the
agent itself asked for.
"""

from __future__ import annotations

import json
from enum import StrEnum
from http import HTTPStatus


class ErrorCode(StrEnum):
    """The ``error`` field of every proxy-made answer."""

    POLICY_DENIED = "policy_denied"
    SSRF_DENIED = "ssrf_denied"
    CLEARTEXT_CREDENTIAL_REFUSED = "cleartext_credential_refused"
    INVALID_REQUEST = "invalid_request"
    TOKEN_GRANT_FAILED = "token_grant_failed"  # noqa: S105 (an error code, not a secret)
    UPSTREAM_UNREACHABLE = "upstream_unreachable"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.POLICY_DENIED: 403,
    ErrorCode.SSRF_DENIED: 403,
    ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED: 403,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.TOKEN_GRANT_FAILED: 502,
    ErrorCode.UPSTREAM_UNREACHABLE: 502,
}

# The only values ``reason`` may take in a token_grant_failed answer.
GRANT_FAILURE_REASONS = frozenset(
    {
        "workload_identity_unavailable",
        "workload_identity_denied",
        "token_endpoint_unreachable",
        "token_endpoint_timeout",
        "token_endpoint_rejected",
        "token_endpoint_error",
        "token_malformed",
        "grant_misconfigured",
    }
)

_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.POLICY_DENIED: "the sandbox policy does not allow this request",
    ErrorCode.SSRF_DENIED: "the destination address is not allowed",
    ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED: (
        "this destination needs a credential, which is only sent over TLS; use https"
    ),
    ErrorCode.INVALID_REQUEST: "the request is malformed or ambiguous",
    ErrorCode.TOKEN_GRANT_FAILED: "a token for this destination could not be obtained",
    ErrorCode.UPSTREAM_UNREACHABLE: "the destination could not be reached",
}


class ProxyAnswer(Exception):
    """Raised inside the relay to stop a request and answer it; carries only safe data."""

    def __init__(
        self,
        code: ErrorCode,
        *,
        reason: str | None = None,
        status: int | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(f"{code}: {detail}" if detail else str(code))
        if reason is not None and reason not in GRANT_FAILURE_REASONS:
            raise ValueError(f"unknown grant failure reason {reason!r}")
        self.code = code
        self.reason = reason
        self.status = status or STATUS[code]
        # For operators (logs, events); never put into the answer.
        self.detail = detail

    def to_bytes(self, target: str = "") -> bytes:
        return answer_bytes(self.code, reason=self.reason, status=self.status, target=target)


def answer_body(code: ErrorCode, *, reason: str | None = None, target: str = "") -> bytes:
    body: dict[str, str] = {"error": str(code)}
    if reason is not None:
        if reason not in GRANT_FAILURE_REASONS:
            raise ValueError(f"unknown grant failure reason {reason!r}")
        body["reason"] = reason
    body["message"] = _MESSAGES[code]
    if target:
        body["target"] = target
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()


def answer_bytes(
    code: ErrorCode, *, reason: str | None = None, status: int | None = None, target: str = ""
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
