"""The proxy's own answers: exact bytes, stable codes, nothing secret."""

from __future__ import annotations

import json

import pytest

from grantbox.grants import GrantFailure
from grantbox.proxy.answers import (
    STATUS,
    ErrorCode,
    ProxyAnswer,
    answer_bytes,
)


def _split(raw: bytes) -> tuple[list[bytes], dict[str, str]]:
    head, body = raw.split(b"\r\n\r\n", 1)
    return head.split(b"\r\n"), json.loads(body)


def test_policy_denied_bytes() -> None:
    raw = answer_bytes(ErrorCode.POLICY_DENIED, target="alpha.example:443")
    body = (
        b'{"error":"policy_denied","message":"the sandbox policy does not allow this request",'
        b'"target":"alpha.example:443"}'
    )
    assert raw == (
        b"HTTP/1.1 403 Forbidden\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Cache-Control: no-store\r\n"
        b"Connection: close\r\n\r\n" + body
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.POLICY_DENIED, 403),
        (ErrorCode.SSRF_DENIED, 403),
        (ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED, 403),
        (ErrorCode.INVALID_REQUEST, 400),
        (ErrorCode.TOKEN_GRANT_FAILED, 502),
        (ErrorCode.UPSTREAM_UNREACHABLE, 502),
        (ErrorCode.CONNECTION_LIMIT_REACHED, 503),
    ],
)
def test_every_code_has_its_status_json_and_connection_close(code: ErrorCode, status: int) -> None:
    assert STATUS[code] == status
    lines, body = _split(answer_bytes(code))
    assert lines[0].startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Connection: close" in lines
    assert b"Content-Type: application/json" in lines
    assert body["error"] == str(code)
    assert "reason" not in body


@pytest.mark.parametrize("reason", list(GrantFailure))
def test_grant_failures_carry_only_the_reason(reason: GrantFailure) -> None:
    answer = ProxyAnswer(
        ErrorCode.TOKEN_GRANT_FAILED, reason=reason, detail="issuer said: secret-ish detail"
    )
    raw = answer.to_bytes()
    lines, body = _split(raw)
    assert lines[0] == b"HTTP/1.1 502 Bad Gateway"
    assert body["error"] == "token_grant_failed"
    assert body["reason"] == reason.value
    assert b"secret-ish" not in raw


def test_unknown_reasons_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown grant failure reason"):
        ProxyAnswer(ErrorCode.TOKEN_GRANT_FAILED, reason="issuer said eyJhbGciOi...")  # type: ignore[arg-type]


def test_431_for_large_heads_and_odd_targets_are_not_echoed() -> None:
    raw = ProxyAnswer(ErrorCode.INVALID_REQUEST, status=431).to_bytes("a\r\nX-Injected: 1")
    lines, body = _split(raw)
    assert lines[0] == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert "target" not in body
    assert b"X-Injected" not in raw
