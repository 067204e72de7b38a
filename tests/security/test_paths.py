"""Path tricks: a token (or an L7 rule's admission) must never reach a path the binding
or rule would not cover once an upstream normalises the path.

The model upstream below is deliberately lenient - it does what Tomcat, Spring, Jetty and
nginx variously do: percent-decode, drop ``;`` parameters per segment, collapse ``//``
and resolve dot segments. Whatever the proxy admits (or injects into) must still be
inside the pattern after that.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grantbox.profiles import path_matches
from grantbox.proxy import authorize
from tests.support.proxy_clients import parse_replies, send_raw
from tests.support.proxy_harness import (
    RecordingTokens,
    endpoint,
    grant_profile,
    make_config,
    running_proxy,
)
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK

_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def lenient_normalise(path: str) -> str:
    """The most forgiving reading of ``path`` a real upstream might apply."""
    for _ in range(3):  # double decoding too
        path = _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), path)
    path = path.replace("\\", "/")
    out: list[str] = []
    for raw in path.split("/"):
        segment = raw.split(";", 1)[0]
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return "/" + "/".join(out)


def _config():  # type: ignore[no-untyped-def]
    profile = grant_profile(
        "alpha", [endpoint("alpha.example", 443, path="/api/**", allowed_ips=LOOPBACK)]
    )
    return make_config(
        policy=[
            endpoint(
                "alpha.example",
                443,
                protocol="rest",
                rules=[{"method": "GET", "path": "/public/**"}],
            )
        ],
        providers=[("alpha", profile)],
    )


CONFIG = _config()

SEGMENTS = [
    "api", "public", "admin", "x", "", ".", "..", "%2e", "%2E%2e", ".%2e", "..;", "..;x",
    "%2e%2e;", ".;", "api;x", ";", "%2f", "%2F", "%5c", "%252e%252e", "%252f", "\\",
    "%00", "%c0%ae%c0%ae",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6))
def test_what_is_admitted_or_injected_stays_inside_the_pattern_after_normalising(
    segments: list[str],
) -> None:
    path = "/" + "/".join(segments)
    decision = authorize(
        CONFIG, method="GET", host="alpha.example", port=443, path=path, scheme="https"
    )
    if not decision.allowed:
        return
    normalised = lenient_normalise(path)
    if decision.binding is not None:
        assert path_matches("/api/**", normalised), (path, normalised)
    elif decision.endpoint is not None and decision.endpoint.rules:
        assert path_matches("/public/**", normalised), (path, normalised)


@pytest.mark.parametrize(
    "path",
    [
        "/api/..;/admin",
        "/api/..;x/admin",
        "/api/%2e%2e;/admin",
        "/api/.;/../admin",
        "/public/..;/admin",
        "/public/%2e%2E;jsessionid=1/admin",
    ],
)
def test_matrix_parameter_dot_segments_are_refused(path: str) -> None:
    decision = authorize(
        CONFIG, method="GET", host="alpha.example", port=443, path=path, scheme="https"
    )
    assert not decision.allowed and decision.binding is None
    assert decision.code == "invalid_request"


@pytest.mark.parametrize(
    "path",
    ["/api//x", "/api/x;v=1", "/api/a%20b", "/api/x?next=/../admin", "/api/x?a=%2f", "/api/"],
)
def test_ordinary_odd_paths_still_get_the_token(path: str) -> None:
    decision = authorize(
        CONFIG, method="GET", host="alpha.example", port=443, path=path, scheme="https"
    )
    assert decision.allowed and decision.binding is not None


async def test_tomcat_style_traversal_gets_no_token_end_to_end(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", port, path="/api/**", allowed_ips=LOOPBACK)]
    )
    tokens = RecordingTokens(token="granted")
    async with running_proxy(make_config(providers=[("alpha", profile)]), tokens, tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            b"GET http://alpha.localhost:%d/api/..;/admin HTTP/1.1\r\nHost: x\r\n\r\n" % port,
        )
    assert [r.status for r in parse_replies(raw)] == [400]
    assert plain_upstream.connections == 0 and tokens.asked == []


async def test_an_overlong_path_is_431_and_a_long_one_still_works(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    profile = grant_profile("alpha", [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    async with running_proxy(
        make_config(providers=[("alpha", profile)]), RecordingTokens(), tmp_path
    ) as rp:
        base = b"GET http://alpha.localhost:%d/" % port
        long_ok = await send_raw(
            rp.port, base + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        too_long = await send_raw(rp.port, base + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [r.status for r in parse_replies(long_ok)] == [200]
    assert [r.status for r in parse_replies(too_long)] == [431]
    assert len(plain_upstream.requests) == 1


METHOD_OVERRIDES = [
    ("GET", "X-HTTP-Method-Override: DELETE\r\n", ""),
    ("GET", "x-http-method: DELETE\r\n", ""),
    ("GET", "X-Method-Override: PUT\r\n", ""),
    ("GET", "", "?_method=DELETE"),
    ("GET", "", "?a=1&_METHOD=delete"),
]


@pytest.mark.parametrize(("method", "header", "query"), METHOD_OVERRIDES)
async def test_method_override_cannot_bypass_a_read_only_endpoint(
    method: str, header: str, query: str, plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """Frameworks that honour X-HTTP-Method-Override or ``_method`` would run a DELETE that
    the policy (read-only) refuses - with the endpoint's token attached."""
    port = plain_upstream.port
    profile = grant_profile(
        "alpha",
        [
            endpoint(
                "alpha.localhost", port, allowed_ips=LOOPBACK, protocol="rest", access="read-only"
            )
        ],
    )
    tokens = RecordingTokens(token="granted")
    async with running_proxy(make_config(providers=[("alpha", profile)]), tokens, tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            f"{method} http://alpha.localhost:{port}/items{query} HTTP/1.1\r\nHost: a\r\n"
            f"{header}\r\n".encode(),
        )
    (reply,) = parse_replies(raw)
    assert (reply.status, reply.json()["error"]) == (403, "policy_denied")
    assert plain_upstream.connections == 0 and tokens.asked == []


async def test_method_override_is_left_alone_where_every_method_is_allowed(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    profile = grant_profile("alpha", [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    async with running_proxy(
        make_config(providers=[("alpha", profile)]), RecordingTokens(), tmp_path
    ) as rp:
        raw = await send_raw(
            rp.port,
            f"POST http://alpha.localhost:{port}/items?_method=DELETE HTTP/1.1\r\nHost: a\r\n"
            "X-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
    assert [r.status for r in parse_replies(raw)] == [200]
