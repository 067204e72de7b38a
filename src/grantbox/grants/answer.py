"""What the token endpoint answered, judged without any I/O.

The answer is untrusted input that ends up in an HTTP header, so it is held to a strict
shape: a JSON object with a token68 ``access_token`` and, when present, a positive integer
``expires_in``. Error answers contribute only their sanitised OAuth ``error`` and
``error_description`` fields; the raw body is never repeated anywhere.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from .errors import GrantError, GrantFailure, TokenMalformed, error_for_reason

MAX_BODY_BYTES = 64 * 1024
MAX_OAUTH_FIELD_CHARS = 256

_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# Statuses with which an authorization server says "no" to this client (RFC 6749 §5.2).
_REJECTING_STATUSES = frozenset({400, 401, 403})


def is_token68(value: str) -> bool:
    """RFC 7235 token68: safe to place after ``Bearer `` or as a bare header value."""
    return isinstance(value, str) and _TOKEN68.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """A validated successful answer."""

    access_token: str = field(repr=False)
    expires_in: int | None


def sanitise_oauth_field(value: str) -> str:
    """Control and format characters removed, at most 256 characters, trimmed."""
    kept = "".join(ch for ch in value if unicodedata.category(ch) not in {"Cc", "Cf"})
    return kept[:MAX_OAUTH_FIELD_CHARS].strip()


def status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def reason_for_status(status: int) -> GrantFailure:
    """Failure reason for a non-2xx status."""
    if status in _REJECTING_STATUSES:
        return GrantFailure.TOKEN_ENDPOINT_REJECTED
    return GrantFailure.TOKEN_ENDPOINT_ERROR


def oauth_error_fields(body: bytes) -> dict[str, str]:
    """The sanitised ``error`` / ``error_description`` of an error body, if it has any."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, str] = {}
    for name in ("error", "error_description"):
        value = data.get(name)
        if isinstance(value, str):
            cleaned = sanitise_oauth_field(value)
            if cleaned:
                out[name] = cleaned
    return out


def failure_for_status(status: int, body: bytes) -> GrantError:
    """The error for a non-2xx answer; mentions only the status and sanitised OAuth fields."""
    detail = f"token endpoint answered {status_text(status)}"
    if 300 <= status < 400:
        detail += " (redirects are not followed)"
    fields = oauth_error_fields(body)
    if fields:
        detail += ": " + "; ".join(f"{k}={v}" for k, v in fields.items())
    return error_for_reason(reason_for_status(status), detail)


def parse_success(body: bytes) -> TokenAnswer:
    """Validate a 2xx body. Raises :class:`TokenMalformed` describing what was wrong."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TokenMalformed("token endpoint answer is not JSON") from None
    if not isinstance(data, dict):
        raise TokenMalformed("token endpoint answer is not a JSON object")
    token = data.get("access_token")
    if not isinstance(token, str):
        raise TokenMalformed("token endpoint answer has no string access_token")
    if not is_token68(token):
        raise TokenMalformed("access_token is not a token68 value")
    expires_in = data.get("expires_in")
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int):
            raise TokenMalformed("expires_in is not an integer")
        if expires_in <= 0:
            raise TokenMalformed("expires_in is not positive")
    return TokenAnswer(access_token=token, expires_in=expires_in)


def judge_answer(status: int, body: bytes) -> TokenAnswer:
    """The token in an answer, or the :class:`GrantError` that the answer amounts to."""
    if 200 <= status < 300:
        return parse_success(body)
    raise failure_for_status(status, body)
