"""WebSocket through the proxy: the handshake decided and injected like any request, then a
tunnel - through a real proxy to a recording echo server, on every path (forward proxy,
plain HTTP inside CONNECT, TLS inside CONNECT); and the handshake checks over plain data."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from grantbox.proxy import Limits, parse_head
from grantbox.proxy.websocket import accept_problem, expected_accept, handshake_key
from tests.support.proxy_clients import connection, parse_replies, read_all, tunnel
from tests.support.proxy_harness import (
    RecordingTokens,
    endpoint,
    grant_profile,
    make_config,
    running_proxy,
)
from tests.support.stored_credentials import stored_profile, with_values
from tests.support.websocket_peers import EchoServer, converse, echo_server

from .conftest import LOOPBACK

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example


def handshake(**overrides: str | None) -> bytes:
    fields = {
        "Host": "alpha.localhost",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": KEY,
    }
    fields.update(overrides)
    lines = "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
    return f"GET /ws HTTP/1.1\r\n{lines}\r\n".encode()


def forward_handshake(port: int) -> bytes:
    """A raw handshake for the forward proxy (absolute-form target)."""
    head = handshake(Host=f"alpha.localhost:{port}")
    return head.replace(b"GET /ws", b"GET http://alpha.localhost:%d/ws/x" % port)


def test_the_accept_is_the_rfc_example() -> None:
    assert expected_accept(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("head", "valid"),
    [
        (handshake(), True),
        (handshake(Upgrade="WebSocket", Connection="Upgrade"), True),
        (handshake(**{"Sec-WebSocket-Version": "8"}), False),
        (handshake(**{"Sec-WebSocket-Key": None}), False),
        (handshake(**{"Sec-WebSocket-Key": "c2hvcnQ="}), False),  # not 16 bytes
        (handshake(**{"Sec-WebSocket-Key": "not base64!!"}), False),
        (handshake(Upgrade="h2c"), False),
        (handshake(Connection="keep-alive"), False),
        (handshake(**{"Content-Length": "5"}), False),
        (handshake().replace(b"GET", b"POST"), False),
        (handshake().replace(b"HTTP/1.1", b"HTTP/1.0"), False),
    ],
)
def test_only_a_valid_opening_handshake_upgrades(head: bytes, valid: bool) -> None:
    assert (handshake_key(parse_head(head)) == KEY) is valid


GOOD = ("Sec-WebSocket-Accept", expected_accept(KEY).decode())
SWITCH = [("Upgrade", "websocket"), ("Connection", "Upgrade")]


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ([*SWITCH, GOOD], None),
        ([*SWITCH, ("Sec-WebSocket-Accept", "AAAA")], "does not match"),
        ([*SWITCH, GOOD, GOOD], "does not match"),
        (SWITCH, "does not match"),
        ([("Upgrade", "h2c"), ("Connection", "Upgrade"), GOOD], "other than websocket"),
    ],
)
def test_a_101_must_answer_our_key(headers: list[tuple[str, str]], problem: str | None) -> None:
    import h11

    found = accept_problem(h11.InformationalResponse(status_code=101, headers=headers), KEY)
    assert (found is None) if problem is None else (found is not None and problem in found)


# -- through a real proxy -----------------------------------------------------------------


@pytest.fixture
async def plain_echo() -> AsyncIterator[EchoServer]:
    async with echo_server() as server:
        yield server


@pytest.fixture
async def tls_echo(upstream_ca: trustme.CA) -> AsyncIterator[EchoServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    upstream_ca.issue_cert("alpha.localhost", "beta.localhost").configure_cert(context)
    async with echo_server(ssl_context=context) as server:
        yield server


def _config(port: int) -> object:
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", port, path="/ws/**", allowed_ips=LOOPBACK)]
    )
    policy = [
        endpoint("beta.localhost", port, allowed_ips=LOOPBACK),
        endpoint("alpha.localhost", port, allowed_ips=LOOPBACK),
    ]
    return make_config(policy=policy, providers=[("alpha", profile)])


@pytest.mark.parametrize("path", ["forward", "connect-plain", "connect-tls"])
async def test_the_handshake_gets_the_token_and_frames_flow(
    path: str,
    plain_echo: EchoServer,
    tls_echo: EchoServer,
    upstream_ca_file: Path,
    tmp_path: Path,
) -> None:
    server = tls_echo if path == "connect-tls" else plain_echo
    port = server.port
    tokens = RecordingTokens(token="granted")
    config = _config(port)
    agent_copy = [("Authorization", "Bearer forged")]
    async with running_proxy(config, tokens, tmp_path, upstream_ca_file=upstream_ca_file) as rp:
        messages = ["hello", b"\x00\x01binary", "x" * 200_000]
        if path == "forward":
            async with connection(rp.port) as (reader, writer):
                talk = await converse(
                    reader, writer, f"alpha.localhost:{port}",
                    f"http://alpha.localhost:{port}/ws/chat", messages, headers=agent_copy,
                )  # fmt: skip
        else:
            ca = rp.ca_file if path == "connect-tls" else None
            async with tunnel(rp.port, "alpha.localhost", port, ca) as (reader, writer):
                talk = await converse(
                    reader, writer, f"alpha.localhost:{port}", "/ws/chat", messages,
                    headers=agent_copy,
                )  # fmt: skip
    assert talk.status == 101, talk.answer
    assert talk.received == messages
    (shake,) = server.handshakes
    assert shake.target == "/ws/chat"
    assert shake.header("authorization") == ["Bearer granted"]  # the agent's copy is gone
    assert shake.header("upgrade") == ["websocket"]
    assert server.messages == messages
    (event,) = [e for e in rp.events if e["http_request"]["url"]["path"] == "/ws/chat"]
    assert event["unmapped"]["upgrade"] == "websocket"
    assert event["unmapped"]["injection"] == "injected"
    assert "granted" not in json.dumps(rp.events)


async def test_a_handshake_the_binding_does_not_match_gets_no_token(
    plain_echo: EchoServer, tmp_path: Path
) -> None:
    port = plain_echo.port
    tokens = RecordingTokens(token="granted")
    async with running_proxy(_config(port), tokens, tmp_path) as rp:
        for host in ("beta.localhost", "alpha.localhost"):
            async with connection(rp.port) as (reader, writer):
                talk = await converse(
                    reader, writer, f"{host}:{port}", f"http://{host}:{port}/other", ["x"]
                )
            assert talk.status == 101
    assert [h.header("authorization") for h in plain_echo.handshakes] == [[], []]
    assert tokens.asked == []


async def test_a_placeholder_in_the_handshake_is_replaced_where_bound(
    plain_echo: EchoServer, tmp_path: Path
) -> None:
    port = plain_echo.port
    profile = stored_profile("svc", [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    config, placeholders = with_values(
        make_config(providers=[("svc", profile)]), {"svc:key": "v4lue"}
    )
    p = placeholders["svc:key"]
    async with (
        running_proxy(config, RecordingTokens(), tmp_path) as rp,
        connection(rp.port) as (reader, writer),
    ):
        url = f"http://alpha.localhost:{port}/ws?t={p}"
        talk = await converse(
            reader, writer, f"alpha.localhost:{port}", url, [p], headers=[("X-Key", p)]
        )
    assert talk.status == 101 and talk.received == [p]  # frames are not rewritten
    (shake,) = plain_echo.handshakes
    assert shake.target == "/ws?t=v4lue" and shake.header("x-key") == ["v4lue"]


@pytest.mark.parametrize(("mode", "status"), [("refuse", 403), ("bad-accept", 502)])
async def test_an_upstream_that_declines_or_answers_wrongly(
    mode: str, status: int, tmp_path: Path
) -> None:
    async with echo_server(mode) as server:
        port = server.port
        async with (
            running_proxy(_config(port), RecordingTokens(), tmp_path) as rp,
            connection(rp.port) as (reader, writer),
        ):
            writer.write(forward_handshake(port))
            await writer.drain()
            raw = await read_all(reader)
    (reply,) = parse_replies(raw)
    assert reply.status == status
    if mode == "bad-accept":
        assert reply.json()["error"] == "upstream_unreachable"
        assert b"\x81\x02hi" not in raw  # nothing after the bad 101 reached the agent
    else:
        assert reply.body == b"go away" and reply.header("connection") == "close"


async def test_an_idle_tunnel_is_closed(plain_echo: EchoServer, tmp_path: Path) -> None:
    port = plain_echo.port
    limits = Limits(idle_timeout=0.3)
    async with (
        running_proxy(_config(port), RecordingTokens(), tmp_path, limits=limits) as rp,
        connection(rp.port) as (reader, writer),
    ):
        writer.write(forward_handshake(port))
        await writer.drain()
        # Upgraded, then silence: the proxy ends the tunnel (read_all returns at EOF).
        raw = await read_all(reader, timeout=30)
    assert raw.startswith(b"HTTP/1.1 101 ")
    assert plain_echo.connections == 1
