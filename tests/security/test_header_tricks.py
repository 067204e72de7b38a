"""Stripping the agent's copies of the injected header, and host confusion, attacked with
raw bytes against a real proxy and real upstreams."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from grantbox.profiles import EffectiveConfig
from tests.support.proxy_clients import connection, parse_replies, read_all, send_raw, tunnel
from tests.support.proxy_harness import (
    RecordingTokens,
    endpoint,
    grant_profile,
    make_config,
    running_proxy,
)
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK

# Agent copies of the injected header in every spelling a parser might honour.
COPIES = [
    b"authorization: Bearer lower-copy",
    b"AUTHORIZATION: Bearer upper-copy",
    b"Authorization : Bearer space-copy",
    b"Authorization\t: Bearer tab-copy",
    b"Authorization:Bearer tight-copy",
    b"Authorization: \tBearer padded-copy\t",
    b"AuThOrIzAtIoN: Bearer mixed-copy",
]


def _alpha_beta(port: int, header_name: str = "") -> EffectiveConfig:
    """A binding on alpha only; beta is allowed by policy but gets no token."""
    extra = {"auth_style": "header", "header_name": header_name} if header_name else {}
    alpha = grant_profile(
        "alpha", [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)], **extra
    )
    return make_config(
        policy=[endpoint("beta.localhost", port, allowed_ips=LOOPBACK)],
        providers=[("alpha", alpha)],
    )


def _assert_no_copy(upstream: RecordingUpstream) -> None:
    assert b"-copy" not in upstream.received


async def test_every_spelling_of_the_agents_copy_is_removed_on_a_forward_connection(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    async with running_proxy(_alpha_beta(port), RecordingTokens(token="granted"), tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            b"GET http://alpha.localhost:%d/ HTTP/1.1\r\nHost: x\r\n" % port
            + b"\r\n".join(COPIES)
            + b"\r\nConnection: close\r\n\r\n",
        )
    assert [r.status for r in parse_replies(raw)] == [200]
    (seen,) = plain_upstream.requests
    assert seen.header("authorization") == ["Bearer granted"]
    _assert_no_copy(plain_upstream)


async def test_custom_header_copies_are_removed_and_authorization_is_left_alone(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    port = tls_upstream.port
    config = _alpha_beta(port, header_name="X-Api-Key")
    async with (
        running_proxy(
            config, RecordingTokens(token="granted"), tmp_path, upstream_ca_file=upstream_ca_file
        ) as rp,
        tunnel(rp.port, "alpha.localhost", port, rp.ca_file) as (reader, writer),
    ):
        writer.write(
            b"GET / HTTP/1.1\r\nHost: alpha.localhost:%d\r\n" % port
            + b"x-api-key: lower-copy\r\nX-API-KEY : space-copy\r\nX-Api-Key\t: tab-copy\r\n"
            + b"Authorization: Bearer agent-own\r\nConnection: close\r\n\r\n"
        )
        raw = await read_all(reader)
    assert [r.status for r in parse_replies(raw)] == [200]
    (seen,) = tls_upstream.requests
    assert seen.header("x-api-key") == ["granted"]
    assert seen.header("authorization") == ["Bearer agent-own"]
    _assert_no_copy(tls_upstream)


@pytest.mark.parametrize("name", [b"Authorization\t", b"Authorization ", b"X-Other \t"])
async def test_whitespace_before_colon_on_an_unbound_request_is_refused(
    name: bytes, plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    async with running_proxy(_alpha_beta(port), RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            b"GET http://beta.localhost:%d/ HTTP/1.1\r\nHost: x\r\n%s: v\r\n\r\n" % (port, name),
        )
    assert [r.status for r in parse_replies(raw)] == [400]
    assert plain_upstream.connections == 0


async def test_absolute_form_host_wins_over_a_lying_host_header(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """Request to beta with ``Host: alpha``: decided, addressed and sent as beta - so no
    alpha token, and the upstream is told beta."""
    port = plain_upstream.port
    tokens = RecordingTokens(token="granted")
    async with running_proxy(_alpha_beta(port), tokens, tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            b"GET http://beta.localhost:%d/ HTTP/1.1\r\nHost: alpha.localhost:%d\r\n" % (port, port)
            + b"Connection: close\r\n\r\n",
        )
    assert [r.status for r in parse_replies(raw)] == [200]
    (seen,) = plain_upstream.requests
    assert seen.header("host") == [f"beta.localhost:{port}"]
    assert seen.header("authorization") == [] and tokens.asked == []


async def test_duplicate_host_is_refused(plain_upstream: RecordingUpstream, tmp_path: Path) -> None:
    port = plain_upstream.port
    async with running_proxy(_alpha_beta(port), RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            b"GET http://beta.localhost:%d/ HTTP/1.1\r\n" % port
            + b"Host: beta.localhost:%d\r\nhost: alpha.localhost:%d\r\n\r\n" % (port, port),
        )
    assert [r.status for r in parse_replies(raw)] == [400]
    assert plain_upstream.connections == 0


@pytest.mark.parametrize(
    "target",
    [
        "http://alpha.localhost:{p}@beta.localhost:{p}/",
        "http://beta.localhost:{p}#@alpha.localhost:{p}/",
        "http://beta.localhost:{p}\\@alpha.localhost:{p}/",
        "http://alpha.localhost%2ebeta.localhost:{p}/",
        "http://alpha.localhost.:{p}/",
        "http://ALPHA.LOCALHOST:{p}/",
    ],
)
async def test_authority_tricks_never_get_alpha_a_token_on_another_host(
    target: str, plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """Whatever the proxy makes of a tricky authority, a token goes only where the upstream
    Host header says alpha - and never to beta."""
    port = plain_upstream.port
    tokens = RecordingTokens(token="granted")
    async with running_proxy(_alpha_beta(port), tokens, tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            f"GET {target.format(p=port)} HTTP/1.1\r\nHost: x\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
    assert parse_replies(raw)
    for seen in plain_upstream.requests:
        if seen.header("authorization"):
            assert seen.header("host") == [f"alpha.localhost:{port}"]


async def test_connect_to_alpha_then_requests_for_beta_are_refused(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    port = tls_upstream.port
    tokens = RecordingTokens(token="granted")
    async with (
        running_proxy(_alpha_beta(port), tokens, tmp_path, upstream_ca_file=upstream_ca_file) as rp,
    ):
        for request in (
            b"GET / HTTP/1.1\r\nHost: beta.localhost:%d\r\n\r\n" % port,
            b"GET https://beta.localhost:%d/ HTTP/1.1\r\nHost: beta.localhost:%d\r\n\r\n"
            % (port, port),
            b"GET / HTTP/1.1\r\nHost: alpha.localhost:%d\r\nHost: beta.localhost\r\n\r\n" % port,
            b"GET / HTTP/1.1\r\n\r\n",
        ):
            async with tunnel(rp.port, "alpha.localhost", port, rp.ca_file) as (reader, writer):
                writer.write(request)
                replies = parse_replies(await read_all(reader))
            assert [r.status for r in replies] == [400], request
    assert tls_upstream.connections == 0 and tokens.asked == []


async def test_sni_naming_another_host_changes_nothing(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    """CONNECT alpha with SNI beta: the proxy presents alpha's leaf, decides by the CONNECT
    host and the Host header, and dials alpha; a request for beta is refused."""
    port = tls_upstream.port
    tokens = RecordingTokens(token="granted")
    async with running_proxy(
        _alpha_beta(port), tokens, tmp_path, upstream_ca_file=upstream_ca_file
    ) as rp:
        answers = []
        for host in ("beta", "alpha"):
            async with connection(rp.port) as (reader, writer):
                writer.write(b"CONNECT alpha.localhost:%d HTTP/1.1\r\n\r\n" % port)
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                context = ssl.create_default_context(cafile=str(rp.ca_file))
                context.check_hostname = False
                await writer.start_tls(context, server_hostname="beta.localhost")
                leaf = writer.get_extra_info("peercert")
                assert ("DNS", "alpha.localhost") in leaf["subjectAltName"]
                writer.write(
                    f"GET / HTTP/1.1\r\nHost: {host}.localhost:{port}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                answers.extend(r.status for r in parse_replies(await read_all(reader)))
    assert answers == [400, 200]
    (seen,) = tls_upstream.requests
    assert seen.header("host") == [f"alpha.localhost:{port}"]
    assert seen.header("authorization") == ["Bearer granted"]


async def test_upgrade_requests_are_relayed_as_plain_requests_never_as_a_raw_pipe(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """``Upgrade`` is hop-by-hop: the upstream gets a plain GET, and whatever follows on
    the agent's connection is parsed as the next request, not piped."""
    port = plain_upstream.port
    async with running_proxy(_alpha_beta(port), RecordingTokens(token="granted"), tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            b"GET http://alpha.localhost:%d/ws HTTP/1.1\r\nHost: a\r\n" % port
            + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
            + b"GET /admin HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n",
        )
    assert [r.status for r in parse_replies(raw)] == [200, 400]
    (seen,) = plain_upstream.requests
    assert seen.target == "/ws" and seen.header("upgrade") == []


async def test_connect_inside_a_tunnel_is_refused(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    port = tls_upstream.port
    async with (
        running_proxy(
            _alpha_beta(port), RecordingTokens(), tmp_path, upstream_ca_file=upstream_ca_file
        ) as rp,
        tunnel(rp.port, "alpha.localhost", port, rp.ca_file) as (reader, writer),
    ):
        writer.write(b"CONNECT beta.localhost:%d HTTP/1.1\r\nHost: beta.localhost\r\n\r\n" % port)
        replies = parse_replies(await read_all(reader), [b"CONNECT"])
    assert [r.status for r in replies] == [400]
    assert tls_upstream.connections == 0


@pytest.mark.parametrize(
    "target",
    [b"user@alpha.localhost:443", b"alpha.localhost:443/x", b"alpha.localhost", b"[::1", b":443"],
)
async def test_malformed_connect_targets_are_refused(target: bytes, tmp_path: Path) -> None:
    config = make_config(policy=[endpoint("alpha.localhost", 443)])
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(rp.port, b"CONNECT %s HTTP/1.1\r\n\r\n" % target)
    assert [r.status for r in parse_replies(raw, [b"CONNECT"])] == [400]
