"""Names, ids and labels ending in a newline are refused everywhere (issue #12).

``re.match`` with ``$`` accepts ``"ok\\n"`` (``$`` matches before a trailing LF). Every
validator now uses ``fullmatch``; the property below says no accepted name, id, label,
header name, pattern or token holds a control character, whatever the validator.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from grantbox.gateway.consistency import check_name
from grantbox.gateway.errors import InvalidRequest
from grantbox.identity_agent.registry import check_workload_name
from grantbox.profiles import (
    PatternError,
    Severity,
    header_name_problem,
    parse_host_pattern,
    parse_path_pattern,
    parse_profile,
    validate_profiles,
)
from grantbox.profiles.validation import HTTP_METHOD
from grantbox.proxy import FramingError, parse_head
from grantbox.proxy.tokens import InjectionError, credential_header
from grantbox.sandbox.environment import declared_variable_problem
from tests.grants.bindings import make_binding
from tests.support.gateway_server import grant_profile

CONTROLS = [chr(c) for c in (*range(0x00, 0x20), 0x7F, 0x85)] + ["\u2028", "\u2029"]


def _raises(call: Callable[[], object], *errors: type[BaseException]) -> bool:
    try:
        call()
    except errors:
        return False
    return True


def _profile_field_ok(doc: dict[str, Any], field: str) -> bool:
    profile, diagnostics = parse_profile(doc, "<test>")
    if profile is not None:
        diagnostics = [*diagnostics, *validate_profiles([profile])]
    return not any(
        d.severity is Severity.ERROR and (d.field == field or d.field.startswith(field + "."))
        for d in diagnostics
    )


def _profile_with(**changes: str) -> dict[str, Any]:
    doc = grant_profile(changes.get("id", "api"))
    if "credential" in changes:
        doc["credentials"][0]["name"] = changes["credential"]
    return doc


# Each validator: ``accepts(text) -> bool``, plus a valid example to extend with a control.
VALIDATORS: dict[str, tuple[Callable[[str], bool], str]] = {
    "sandbox/provider name": (
        lambda s: _raises(lambda: check_name("sandbox", s), InvalidRequest),
        "ok",
    ),
    "profile id": (lambda s: _profile_field_ok(_profile_with(id=s), "id"), "example-api"),
    "credential name": (
        lambda s: _profile_field_ok(_profile_with(credential=s), "credentials[0].name"),
        "access_token",
    ),
    "header name": (lambda s: header_name_problem(s) is None, "X-Api-Key"),
    "host pattern": (
        lambda s: _raises(lambda: parse_host_pattern(s), PatternError),
        "api.example.com",
    ),
    "path pattern": (lambda s: _raises(lambda: parse_path_pattern(s), PatternError), "/v1/**"),
    "rule method": (lambda s: HTTP_METHOD.fullmatch(s) is not None, "GET"),
    "workload name": (
        lambda s: _raises(lambda: check_workload_name(s), ValueError),
        "sandbox-1",
    ),
    "agent variable name": (lambda s: declared_variable_problem(s) is None, "MY_VAR"),
    "injected token": (
        lambda s: _raises(lambda: credential_header(make_binding(), s), InjectionError),
        "abc.DEF-123",
    ),
}


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


@pytest.mark.parametrize("kind", list(VALIDATORS))
@pytest.mark.parametrize("control", ["\n", "\r\n", "\r", "\x00", "\t", "\x1b", "\x7f"])
def test_a_valid_name_plus_a_control_character_is_refused(kind: str, control: str) -> None:
    accepts, valid = VALIDATORS[kind]
    assert accepts(valid), f"{kind}: the valid example {valid!r} should pass"
    assert not accepts(valid + control), f"{kind} accepted {valid + control!r}"
    assert not accepts(control + valid), f"{kind} accepted {control + valid!r}"


names = st.one_of(
    st.text(max_size=24),
    st.text(alphabet=string.ascii_letters + string.digits + "-_.*/", max_size=24),
    st.tuples(
        st.sampled_from([valid for _, valid in VALIDATORS.values()]),
        st.sampled_from(CONTROLS),
        st.booleans(),
    ).map(lambda t: t[0] + t[1] if t[2] else t[1] + t[0]),
)


@pytest.mark.parametrize("kind", list(VALIDATORS))
@settings(max_examples=150, deadline=None)
@given(text=names)
@example(text="ok\n")
@example(text="ok\r\n")
@example(text="a\u2028b")
def test_no_accepted_name_contains_a_control_character(kind: str, text: str) -> None:
    accepts, _ = VALIDATORS[kind]
    if accepts(text):
        assert not _has_control(text), f"{kind} accepted {text!r}"


@pytest.mark.parametrize(
    "head",
    [
        b"GET\n /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x\n HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.1\n\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX-A\n: 1\r\nHost: a\r\n\r\n",
    ],
)
def test_request_line_parts_ending_in_lf_are_refused(head: bytes) -> None:
    with pytest.raises(FramingError):
        parse_head(head)
