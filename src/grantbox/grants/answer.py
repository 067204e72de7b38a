"""What the token endpoint answered, judged without any I/O.

The answer is untrusted input that ends up in an HTTP header, so it is held to a strict
shape: a JSON object with a token68 ``access_token`` and, when present, a positive integer
``expires_in``. Error answers contribute only their sanitised OAuth ``error`` and
``error_description`` fields; the raw body is never repeated anywhere.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import re
import unicodedata
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from grantbox.profiles import TokenType

from .errors import (
    GrantError,
    GrantFailure,
    TokenMalformed,
    error_for_reason,
)

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
    token_type: str | None = None
    issued_token_type: str | None = None


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


def failure_for_status(status: int, body: bytes, retry_after: float | None = None) -> GrantError:
    """The error for a non-2xx answer; mentions only the status and sanitised OAuth fields.

    It carries the status, and ``retry_after`` for 429 and 503 (the statuses whose
    ``Retry-After`` asks the client to wait), for the backoff of the negative cache.
    """
    detail = f"token endpoint answered {status_text(status)}"
    if 300 <= status < 400:
        detail += " (redirects are not followed)"
    fields = oauth_error_fields(body)
    if fields:
        detail += ": " + "; ".join(f"{k}={v}" for k, v in fields.items())
    if retry_after is not None and status in RETRY_AFTER_STATUSES:
        detail += f" (retry after {retry_after:g} s)"
    else:
        retry_after = None
    error = error_for_reason(reason_for_status(status), detail)
    error.status = status
    error.retry_after = retry_after
    return error


RETRY_AFTER_STATUSES = frozenset({429, 503})
_DELAY_SECONDS = re.compile(r"[0-9]{1,10}")


def parse_retry_after(value: str, now: float, date: str | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks for (RFC 9110 §10.2.3), or None when unusable.

    Either delay-seconds or an HTTP-date; a date is measured against the answer's own
    ``Date`` header when it has one (so clock skew between us and the endpoint cancels
    out), else against ``now`` (wall-clock seconds). Past dates give 0. The caller bounds
    the result.
    """
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(int(text))
    when = _http_date(text)
    if when is None:
        return None
    reference = _http_date(date) if date else None
    return max(0.0, when - (now if reference is None else reference))


def _http_date(text: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # "-0000": RFC 9110 dates are GMT
        parsed = parsed.replace(tzinfo=datetime.UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


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
    token_type = data.get("token_type")
    issued_token_type = data.get("issued_token_type")
    return TokenAnswer(
        access_token=token,
        expires_in=expires_in,
        token_type=token_type if isinstance(token_type, str) else None,
        issued_token_type=issued_token_type if isinstance(issued_token_type, str) else None,
    )


_BEARER_USABLE = frozenset(str(t) for t in TokenType)
NOT_APPLICABLE = "N_A"


def check_exchanged_token(answer: TokenAnswer, requested_type: str, raw_header: bool) -> None:
    """An RFC 8693 answer holds a token this binding can present, else :class:`TokenMalformed`.

    ``issued_token_type`` is required and must be an access token or a JWT (the types a
    proxy can present), and the requested type when one was asked for. ``token_type`` is
    required and must be ``Bearer``; ``N_A`` (§2.2.1: the token is not an access token) is
    accepted only when the binding places the token raw in its own header, never as
    ``Authorization: Bearer`` that would claim it is one.
    """
    issued = answer.issued_token_type
    if issued is None:
        raise TokenMalformed("token exchange answer has no issued_token_type")
    if issued not in _BEARER_USABLE:
        shown = sanitise_oauth_field(issued)
        raise TokenMalformed(f"issued_token_type {shown!r} is not an access token or a JWT")
    if requested_type and issued != requested_type:
        raise TokenMalformed(
            f"issued_token_type {issued!r} is not the requested {requested_type!r}"
        )
    token_type = answer.token_type
    if token_type is None:
        raise TokenMalformed("token exchange answer has no token_type")
    if token_type == NOT_APPLICABLE:
        if not raw_header:
            raise TokenMalformed(
                "token_type N_A: the issuer says the token is not an access token, so it is "
                "not sent as a Bearer credential"
            )
    elif token_type.lower() != "bearer":
        shown = sanitise_oauth_field(token_type)
        raise TokenMalformed(f"token_type {shown!r} is not Bearer")


def judge_answer(status: int, body: bytes, retry_after: float | None = None) -> TokenAnswer:
    """The token in an answer, or the :class:`GrantError` that the answer amounts to."""
    if 200 <= status < 300:
        return parse_success(body)
    raise failure_for_status(status, body, retry_after)
