"""Method overrides in every spelling a common framework reads (review #12).

``POST /m3?.method=DELETE`` reached a read-write endpoint: PHP turns '.', ' ' and an
unclosed '[' in parameter names into '_', so Symfony and Laravel read ``.method`` as
``_method``. CGI/PHP also read ``X_HTTP_METHOD_OVERRIDE`` as the dashed header. Where an
endpoint restricts methods, every such spelling is refused; elsewhere nothing changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grantbox.profiles import Endpoint
from grantbox.proxy.decision import method_override_problem, parameter_names
from tests.support.proxy_clients import parse_replies, send_raw
from tests.support.proxy_harness import RecordingTokens, endpoint, make_config, running_proxy
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK

READ_WRITE = Endpoint.model_validate(
    {"host": "api.example", "port": 443, "protocol": "rest", "access": "read-write"}
)
FULL = Endpoint.model_validate(
    {"host": "api.example", "port": 443, "protocol": "rest", "access": "full"}
)

OVERRIDING_QUERIES = [
    "_method=DELETE",
    ".method=DELETE",
    "%2Emethod=DELETE",
    "+method=DELETE",
    "%20method=DELETE",
    "[method=DELETE",
    "%5Bmethod=DELETE",
    "_method[]=DELETE",
    "_method[x]=DELETE",
    "_METHOD=DELETE",
    "%5Fmethod=DELETE",
    "a=1&.method=DELETE",
    "a=1;_method=DELETE",
    "++_method=DELETE",
    "_method%00x=DELETE",
]
OVERRIDING_HEADERS = [
    "X-HTTP-Method-Override",
    "x-http-method",
    "X-Method-Override",
    "X_HTTP_METHOD_OVERRIDE",
    "X_Http_Method",
    "x_method-override",
]
HARMLESS_QUERIES = ["method=DELETE", "a_method=x", "methods=1", "x=_method", "_methodx=DELETE"]


@pytest.mark.parametrize("query", OVERRIDING_QUERIES)
def test_every_query_spelling_is_refused_where_methods_are_restricted(query: str) -> None:
    assert method_override_problem(READ_WRITE, [], f"/m3?{query}") is not None
    assert method_override_problem(FULL, [], f"/m3?{query}") is None


@pytest.mark.parametrize("name", OVERRIDING_HEADERS)
def test_every_header_spelling_is_refused_where_methods_are_restricted(name: str) -> None:
    assert method_override_problem(READ_WRITE, [name], "/m3") is not None
    assert method_override_problem(FULL, [name], "/m3") is None


@pytest.mark.parametrize("query", HARMLESS_QUERIES)
def test_other_parameters_pass(query: str) -> None:
    assert method_override_problem(READ_WRITE, ["X-Other"], f"/m3?{query}") is None


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (".method", "_method"),
        (" method", "_method"),
        ("[method", "_method"),
        ("_method[]", "_method"),
        ("a.b c[d", "a_b_c_d"),
        ("%2emethod", "_method"),
    ],
)
def test_names_are_read_the_way_php_reads_them(raw: str, name: str) -> None:
    assert name in parameter_names(raw)


@pytest.mark.parametrize("query", [".method=DELETE", " method=DELETE", "[method=DELETE"])
async def test_a_read_write_endpoint_refuses_the_php_spellings_end_to_end(
    query: str, plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(
        policy=[
            endpoint(
                "alpha.localhost", port, protocol="rest", access="read-write", allowed_ips=LOOPBACK
            )
        ]
    )
    target = f"http://alpha.localhost:{port}/m3?{query.replace(' ', '%20')}"
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port, f"POST {target} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".encode()
        )
        ok = await send_raw(
            rp.port,
            f"POST http://alpha.localhost:{port}/m3?method=x HTTP/1.1\r\nHost: a\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode(),
        )
    (reply,) = parse_replies(raw)
    assert reply.status == 403 and reply.json()["error"] == "policy_denied"
    assert parse_replies(ok)[0].status == 200
    assert [r.target for r in plain_upstream.requests] == ["/m3?method=x"]
