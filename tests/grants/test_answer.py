"""Judging token endpoint answers: token68, OAuth error sanitising, status → reason,
Retry-After, and what an RFC 8693 exchange may answer."""

from __future__ import annotations

import json
import string
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.grants import (
    GrantError,
    TokenMalformed,
    check_exchanged_token,
    is_token68,
    parse_retry_after,
    sanitise_oauth_field,
)
from grantbox.grants.answer import (
    MAX_OAUTH_FIELD_CHARS,
    TokenAnswer,
    failure_for_status,
    judge_answer,
    parse_success,
    reason_for_status,
)

TOKEN68_CHARS = string.ascii_letters + string.digits + "-._~+/"


@pytest.mark.parametrize(
    "value",
    ["abcXYZ123-._~+/", "eyJhbGciOi.eyJzdWIiOi.c2ln", "token==", "a", "a=", "~", "/+"],
)
def test_token68_accepts(value: str) -> None:
    assert is_token68(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "two words",
        "line\r\nInjected: yes",
        "tab\there",
        "del\x7f",
        "nul\x00",
        "caf\u00e9",
        "token=continued",
        "==",
        "=",
        "colon:token",
        'quote"d',
        "semi;colon",
        "comma,sep",
        "\u0661\u0662",  # non-ASCII digits
        "trailing\n",
    ],
)
def test_token68_rejects(value: str) -> None:
    assert not is_token68(value)


@given(st.text(alphabet=TOKEN68_CHARS, min_size=1), st.integers(min_value=0, max_value=3))
def test_token68_accepts_every_alphabet_string_with_padding(body: str, padding: int) -> None:
    assert is_token68(body + "=" * padding)


@given(st.text(min_size=1))
def test_token68_rejects_anything_with_a_foreign_character(value: str) -> None:
    stripped = value.rstrip("=")
    expected = bool(stripped) and all(ch in TOKEN68_CHARS for ch in stripped)
    assert is_token68(value) is expected


def test_sanitise_removes_control_and_format_characters_and_trims() -> None:
    assert sanitise_oauth_field("  bad\r\nclient\x1b[31m\u202eevil\t ") == "badclient[31mevil"


def test_sanitise_truncates_to_256_characters() -> None:
    assert sanitise_oauth_field("x" * 1000) == "x" * MAX_OAUTH_FIELD_CHARS


@given(st.text())
def test_sanitised_text_is_short_and_free_of_control_characters(value: str) -> None:
    cleaned = sanitise_oauth_field(value)
    assert len(cleaned) <= MAX_OAUTH_FIELD_CHARS
    assert not any(unicodedata.category(ch) in {"Cc", "Cf"} for ch in cleaned)
    assert cleaned == cleaned.strip()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"access_token":"abc","expires_in":60}', TokenAnswer("abc", 60)),
        (b'{"access_token":"abc"}', TokenAnswer("abc", None)),
        (b'{"access_token":"abc","expires_in":null}', TokenAnswer("abc", None)),
        (
            b'{"access_token":"a.b.c","token_type":"Bearer","scope":"x y","expires_in":300}',
            TokenAnswer("a.b.c", 300, token_type="Bearer"),
        ),
    ],
)
def test_parse_success_accepts(body: bytes, expected: TokenAnswer) -> None:
    assert parse_success(body) == expected


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'"abc"', "not a JSON object"),
        (b"{}", "no string access_token"),
        (b'{"access_token":123}', "no string access_token"),
        (b'{"access_token":null}', "no string access_token"),
        (b'{"access_token":"a\\r\\nb"}', "token68"),
        (b'{"access_token":"a b"}', "token68"),
        (b'{"access_token":"caf\\u00e9"}', "token68"),
        (b'{"access_token":""}', "token68"),
        (b'{"access_token":"abc","expires_in":"60"}', "not an integer"),
        (b'{"access_token":"abc","expires_in":60.5}', "not an integer"),
        (b'{"access_token":"abc","expires_in":true}', "not an integer"),
        (b'{"access_token":"abc","expires_in":0}', "not positive"),
        (b'{"access_token":"abc","expires_in":-5}', "not positive"),
        (b"[" * 100000, "not JSON"),
    ],
)
def test_parse_success_rejects(body: bytes, why: str) -> None:
    with pytest.raises(TokenMalformed) as caught:
        parse_success(body)
    assert why in caught.value.detail
    assert caught.value.reason == "token_malformed"


def test_malformed_detail_never_echoes_the_token() -> None:
    with pytest.raises(TokenMalformed) as caught:
        parse_success(b'{"access_token":"SECRET\\r\\nX-Evil: 1"}')
    assert "SECRET" not in str(caught.value)
    assert "SECRET" not in repr(caught.value)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "token_endpoint_rejected"),
        (401, "token_endpoint_rejected"),
        (403, "token_endpoint_rejected"),
        (301, "token_endpoint_error"),
        (302, "token_endpoint_error"),
        (307, "token_endpoint_error"),
        (404, "token_endpoint_error"),
        (429, "token_endpoint_error"),
        (500, "token_endpoint_error"),
        (503, "token_endpoint_error"),
        (199, "token_endpoint_error"),
        (999, "token_endpoint_error"),
    ],
)
def test_reason_for_status(status: int, reason: str) -> None:
    assert reason_for_status(status) == reason
    assert failure_for_status(status, b"").reason == reason


def test_oauth_error_answer_reports_only_sanitised_fields() -> None:
    body = json.dumps(
        {
            "error": "invalid_client\r\nX-Injected: 1",
            "error_description": "bad \x1b assertion " + "y" * 500,
            "debug": "INTERNAL-STACK-TRACE",
        }
    ).encode()
    error = failure_for_status(401, body)
    assert error.reason == "token_endpoint_rejected"
    assert error.detail == (
        "token endpoint answered 401 Unauthorized: error=invalid_clientX-Injected: 1; "
        "error_description=bad  assertion " + "y" * (MAX_OAUTH_FIELD_CHARS - 15)
    )
    assert "INTERNAL" not in error.detail


@pytest.mark.parametrize(
    "body",
    [
        b"<html>Internal details: password=hunter2</html>",
        b'{"error": 5, "message": "password=hunter2"}',
        b'["password=hunter2"]',
        b'{"error": "", "error_description": "\\r\\n"}',
    ],
)
def test_unstructured_error_body_is_never_echoed(body: bytes) -> None:
    error = failure_for_status(500, body)
    assert error.detail == "token endpoint answered 500 Internal Server Error"


def test_redirect_detail_says_it_was_not_followed() -> None:
    error = failure_for_status(302, b"")
    assert error.detail == "token endpoint answered 302 Found (redirects are not followed)"


def test_judge_answer_dispatches_on_status() -> None:
    assert judge_answer(200, b'{"access_token":"t"}').access_token == "t"
    assert judge_answer(201, b'{"access_token":"t"}').access_token == "t"
    with pytest.raises(GrantError) as caught:
        judge_answer(401, b'{"access_token":"t"}')
    assert caught.value.reason == "token_endpoint_rejected"


def test_token_answer_repr_hides_the_token() -> None:
    assert "SECRET" not in repr(TokenAnswer("SECRET", 5))


# -- Retry-After -----------------------------------------------------------------------------

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DATE = "Fri, 15 Jan 2027 08:00:00 GMT"


@pytest.mark.parametrize(
    ("value", "date", "seconds"),
    [
        ("120", None, 120.0),
        (" 7 ", None, 7.0),
        ("0", None, 0.0),
        ("9999999999", None, 9999999999.0),  # the caller bounds it
        ("Fri, 15 Jan 2027 08:01:00 GMT", None, 60.0),  # against our clock
        ("Fri, 15 Jan 2027 08:01:00 GMT", "Fri, 15 Jan 2027 07:59:00 GMT", 120.0),  # their clock
        ("Fri, 15 Jan 2027 07:00:00 GMT", None, 0.0),  # in the past
        ("Friday, 15-Jan-27 08:00:30 GMT", DATE, 30.0),  # obsolete RFC 850 form
        ("Fri, 15 Jan 2027 08:00:10 -0000", DATE, 10.0),
        ("Fri, 15 Jan 2027 08:01:00 GMT", "garbage", 60.0),  # unusable Date: our clock
        ("-5", None, None),
        ("1.5", None, None),
        ("12345678901", None, None),  # more digits than any sane delay
        ("soon", None, None),
        ("", None, None),
        ("Fri, 99 Jan 2027 08:01:00 GMT", None, None),
    ],
)
def test_retry_after_values(value: str, date: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW, date) == seconds


@pytest.mark.parametrize(
    ("status", "kept"), [(429, True), (503, True), (500, False), (400, False), (401, False)]
)
def test_failure_carries_status_and_retry_after_only_for_429_and_503(
    status: int, kept: bool
) -> None:
    error = failure_for_status(status, b'{"error":"slow_down"}', retry_after=30.0)
    assert error.status == status
    assert error.retry_after == (30.0 if kept else None)
    assert ("retry after 30 s" in error.detail) is kept


# -- what a token exchange may answer --------------------------------------------------------

ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT = "urn:ietf:params:oauth:token-type:jwt"


def exchanged(token_type: str | None = "Bearer", issued: str | None = ACCESS) -> TokenAnswer:  # noqa: S107
    return TokenAnswer("tok", 60, token_type=token_type, issued_token_type=issued)


@pytest.mark.parametrize(
    ("answer", "requested", "raw", "why"),
    [
        (exchanged(), "", False, None),
        (exchanged(token_type="bearer"), "", False, None),  # case-insensitive (RFC 6749 §7.1)
        (exchanged(issued=JWT), "", False, None),
        (exchanged(issued=JWT), JWT, False, None),
        (exchanged(token_type="N_A", issued=JWT), JWT, True, None),
        (exchanged(token_type="N_A", issued=JWT), JWT, False, "token_type N_A"),
        (exchanged(token_type="n_a"), "", True, "is not Bearer"),  # N_A is case-sensitive
        (exchanged(issued=None), "", False, "no issued_token_type"),
        (exchanged(issued=ACCESS), JWT, False, "not the requested"),
        (exchanged(issued="urn:ietf:params:oauth:token-type:id_token"), "", False, "not an access"),
        (exchanged(issued="urn:ietf:params:oauth:token-type:saml2"), "", True, "not an access"),
        (exchanged(token_type=None), "", False, "no token_type"),
        (exchanged(token_type="DPoP"), "", False, "is not Bearer"),
        (exchanged(token_type="MAC\r\nX: y"), "", False, "is not Bearer"),
    ],
)
def test_exchanged_token_checks(
    answer: TokenAnswer, requested: str, raw: bool, why: str | None
) -> None:
    if why is None:
        check_exchanged_token(answer, requested, raw)
        return
    with pytest.raises(TokenMalformed, match=why) as caught:
        check_exchanged_token(answer, requested, raw)
    assert "\r" not in caught.value.detail


def test_token_types_are_read_from_the_answer_only_when_strings() -> None:
    answer = parse_success(b'{"access_token":"t","token_type":7,"issued_token_type":["x"]}')
    assert answer.token_type is None and answer.issued_token_type is None
