"""Judging token endpoint answers: token68, OAuth error sanitising, status → reason."""

from __future__ import annotations

import json
import string
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.grants import GrantError, TokenMalformed, is_token68, sanitise_oauth_field
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
            TokenAnswer("a.b.c", 300),
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
