"""Stored-credential placeholders over plain data: where they become values, where they are
refused, and that a value never shows up in anything refused."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus, unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grantbox.profiles import StaticSecrets, expand_statics
from grantbox.proxy import Mismatch, compile_placeholders, new_placeholder
from grantbox.proxy.placeholders import (
    PLACEHOLDER,
    Rewritten,
    Unusable,
    find_in_body,
    placements,
    rewrite_body,
    rewrite_headers,
    rewrite_target,
)
from tests.support.stored_credentials import stored_profile

VALUE = "s3cr&t/va lue=+%"  # every character a URL, form or JSON would have to escape
OTHER = "other-value"
GH = stored_profile("gh", [{"host": "api.example.com", "port": 443, "path": "/v1/**"}])
MAIL = stored_profile(
    "mail",
    [{"host": "mail.example.com", "port": 443, "credential_body_rewrite": True}],
    name="password",
)
STATICS = expand_statics([("gh", GH), ("mail", MAIL)])
P_GH = new_placeholder()
P_MAIL = new_placeholder()
TABLE = compile_placeholders(
    STATICS,
    StaticSecrets(
        {"gh:key": VALUE, "mail:password": OTHER}, {"gh:key": P_GH, "mail:password": P_MAIL}
    ),
)
GH_ONLY = frozenset({"gh:key"})


def test_placeholders_are_unguessable_and_plain() -> None:
    made = {new_placeholder() for _ in range(1000)}
    assert len(made) == 1000
    for placeholder in made:
        assert PLACEHOLDER.fullmatch(placeholder)
        assert quote(placeholder, safe="") == placeholder  # nothing to escape anywhere
        assert json.dumps(placeholder) == f'"{placeholder}"'


def test_only_bound_credentials_with_a_value_and_a_placeholder_resolve() -> None:
    table = compile_placeholders(
        STATICS,
        StaticSecrets(
            {"gh:key": VALUE, "gone:key": "x", "mail:password": OTHER},
            {"gh:key": P_GH, "gone:key": new_placeholder(), "mail:password": "not-a-placeholder"},
        ),
    )
    assert set(table.by_owner) == {"gh:key"}
    assert table.matching("api.example.com", 443, "/v1/x")[0].owner == "gh:key"
    assert table.matching("api.example.com", 443, "/v2/x") == ()
    assert not compile_placeholders(STATICS, StaticSecrets())
    assert VALUE not in repr(table) and VALUE not in repr(table.by_owner)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (f"/v1/user?token={P_GH}", f"/v1/user?token={quote(VALUE, safe='')}"),
        (f"/v1/{P_GH}/repos", f"/v1/{quote(VALUE, safe='')}/repos"),
        ("/v1/nothing?a=b", "/v1/nothing?a=b"),
    ],
)
def test_a_bound_placeholder_in_the_target_becomes_the_encoded_value(
    target: str, expected: str
) -> None:
    rewritten = rewrite_target(target, TABLE, GH_ONLY)
    assert isinstance(rewritten, Rewritten)
    assert rewritten.value == expected
    # The value cannot add a segment or a parameter: it decodes back to itself.
    assert unquote(rewritten.value) == target.replace(P_GH, VALUE)
    assert rewritten.used == (GH_ONLY if P_GH in target else frozenset())


@pytest.mark.parametrize(
    ("target", "owner", "where"),
    [
        (f"/v1/user?token={P_MAIL}", "mail:password", "the request target"),
        (f"/v1/user?token={new_placeholder()}", None, "the request target"),
        (f"/v1/user?token={quote(P_GH, safe='').replace('_', '%5F')}", "gh:key", "percent"),
    ],
)
def test_a_placeholder_not_bound_here_is_a_mismatch(
    target: str, owner: str | None, where: str
) -> None:
    refused = rewrite_target(target, TABLE, GH_ONLY)
    assert isinstance(refused, Mismatch)
    assert refused.owner == owner and where in refused.where
    assert VALUE not in refused.detail and OTHER not in refused.detail


def test_headers_bearer_custom_and_basic() -> None:
    basic = base64.b64encode(f"me:{P_GH}".encode()).decode()
    headers = [
        (b"Authorization", f"Bearer {P_GH}".encode()),
        (b"X-Api-Key", P_GH.encode()),
        (b"Proxy-Thing", f"Basic {basic}".encode()),
        (b"Accept", b"*/*"),
    ]
    result = rewrite_headers(headers, TABLE, GH_ONLY)
    assert not isinstance(result, Mismatch)
    out, used = result
    assert used == GH_ONLY
    assert out[0] == (b"Authorization", f"Bearer {VALUE}".encode())
    assert out[1] == (b"X-Api-Key", VALUE.encode())
    scheme, encoded = out[2][1].split(b" ")
    assert scheme == b"Basic" and base64.b64decode(encoded) == f"me:{VALUE}".encode()
    assert out[3] == (b"Accept", b"*/*")


@pytest.mark.parametrize(
    ("headers", "where"),
    [
        ([(b"Authorization", f"Bearer {P_MAIL}".encode())], "the Authorization header"),
        (
            [(b"Authorization", b"Basic " + base64.b64encode(f"u:{P_MAIL}".encode()))],
            "a Basic credential in Authorization",
        ),
        ([(b"X-Anything", f"a {new_placeholder()} b".encode())], "the X-Anything header"),
    ],
)
def test_a_header_placeholder_not_bound_here_is_a_mismatch(
    headers: list[tuple[bytes, bytes]], where: str
) -> None:
    refused = rewrite_headers(headers, TABLE, GH_ONLY)
    assert isinstance(refused, Mismatch) and refused.where == where


TRICKY = OTHER + '"\\&='


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (
            "application/json",
            f'{{"p":"{P_MAIL}"}}',
            json.dumps({"p": TRICKY}, separators=(",", ":")),
        ),
        ("application/x-www-form-urlencoded", f"u=me&p={P_MAIL}", "u=me&p=" + quote_plus(TRICKY)),
        ("text/plain; charset=utf-8", f"pass {P_MAIL}", "pass " + TRICKY),
    ],
)
def test_bodies_that_opted_in_get_the_value_escaped_for_their_type(
    content_type: str, body: str, expected: str
) -> None:
    table = compile_placeholders(
        STATICS,
        StaticSecrets({"mail:password": TRICKY}, {"mail:password": P_MAIL}),
    )
    rewritten = rewrite_body(body.encode(), content_type, table, frozenset({"mail:password"}))
    assert isinstance(rewritten, Rewritten)
    assert rewritten.value == expected.encode()
    assert rewritten.used == {"mail:password"}


def test_a_body_that_did_not_opt_in_refuses_any_placeholder() -> None:
    assert find_in_body(b"no placeholders here", TABLE) is None
    for body in (f"x={P_GH}".encode(), f"x={P_GH}".replace("_", "%5F").encode()):
        found = find_in_body(body, TABLE)
        assert found is not None and found.owner == "gh:key" and found.where == "the request body"
    stranger = find_in_body(new_placeholder().encode(), TABLE)
    assert stranger is not None and stranger.owner is None


def test_placed_credentials_add_what_the_request_lacks() -> None:
    profile = stored_profile(
        "q", [{"host": "q.example.com", "port": 443}], auth_style="query", query_param="api_key"
    )
    basic = stored_profile(
        "b", [{"host": "q.example.com", "port": 443}], name="login", auth_style="basic"
    )
    statics = expand_statics([("q", profile), ("b", basic)])
    table = compile_placeholders(
        statics,
        StaticSecrets(
            {"q:key": "k&1", "b:login": "me:pw"},
            {"q:key": new_placeholder(), "b:login": new_placeholder()},
        ),
    )
    bindings = statics.matching("q.example.com", 443, "/")
    add, target, used = placements(bindings, [], "/search?q=1", table)
    assert target == "/search?q=1&api_key=k%261"
    assert add == [("Authorization", "Basic " + base64.b64encode(b"me:pw").decode())]
    assert used == {"q:key", "b:login"}
    # What the agent sends itself is left alone.
    add, target, used = placements(
        bindings, [(b"authorization", b"Basic x")], "/search?api_key=mine", table
    )
    assert (add, target, used) == ([], "/search?api_key=mine", frozenset())


@pytest.mark.parametrize("bad", ["a\r\nb", "a\nb", "a\x00b", "a\x7fb", " lead", "trail\t"])
def test_a_value_with_control_bytes_is_never_used(bad: str) -> None:
    table = compile_placeholders(STATICS, StaticSecrets({"gh:key": bad}, {"gh:key": P_GH}))
    with pytest.raises(Unusable) as refused:
        rewrite_headers([(b"Authorization", f"Bearer {P_GH}".encode())], table, GH_ONLY)
    assert bad not in str(refused.value)
    with pytest.raises(Unusable):
        rewrite_target(f"/v1/{P_GH}", table, GH_ONLY)
    # Even unchecked at compile time, a value that cannot be a header value never is one.
    raw = compile_placeholders(STATICS, StaticSecrets({"gh:key": "x"}, {"gh:key": P_GH}))
    object.__setattr__(raw.by_owner["gh:key"], "value", bad)
    with pytest.raises(Unusable):
        rewrite_headers([(b"X-Key", P_GH.encode())], raw, GH_ONLY)


# ----------------------------------------------------------------------------- properties

_TEXT = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="%"), max_size=12
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, list[tuple[bytes, bytes]], bytes]:
    """A target, headers and a body with placeholders (known or not) dropped in anywhere."""
    pool = [P_GH, P_MAIL, new_placeholder()]

    def piece() -> str:
        text = draw(_TEXT)
        if draw(st.booleans()):
            text += draw(st.sampled_from(pool))
        return text + draw(_TEXT)

    target = "/" + quote(piece(), safe="/?=&")
    headers = [(b"X-H%d" % i, piece().encode()) for i in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        inner = base64.b64encode(piece().encode()).decode()
        headers.append((b"Authorization", f"Basic {inner}".encode()))
    return target, headers, piece().encode()


@settings(max_examples=300)
@given(requests(), st.sampled_from([frozenset(), GH_ONLY, frozenset({"mail:password"})]))
def test_no_refusal_ever_carries_a_value(
    request: tuple[str, list[tuple[bytes, bytes]], bytes], allowed: frozenset[str]
) -> None:
    target, headers, body = request
    outcomes: list[object] = [
        rewrite_target(target, TABLE, allowed),
        rewrite_headers(headers, TABLE, allowed),
        rewrite_body(body, "text/plain", TABLE, allowed),
        find_in_body(body, TABLE),
    ]
    for outcome in outcomes:
        if isinstance(outcome, Mismatch):
            shown = f"{outcome!r} {outcome.detail}"
            assert VALUE not in shown and OTHER not in shown
    # And a value only ever lands where its owner is allowed.
    rewritten = rewrite_target(target, TABLE, allowed)
    if isinstance(rewritten, Rewritten):
        assert rewritten.used <= allowed
        if "gh:key" not in allowed:
            assert quote(VALUE, safe="") not in rewritten.value
