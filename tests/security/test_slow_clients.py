"""Slow clients: a head that trickles in is cut off by a head deadline, not kept alive by
each byte until the (long) idle timeout; an idle kept-alive connection still waits.

The deadlines are module constants; the tests shorten them (the mechanism is the same,
only the numbers are smaller) so each runs in well under two seconds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from grantbox.proxy import context, relay
from tests.support.proxy_clients import connection, parse_replies, read_all, send_raw
from tests.support.proxy_harness import RecordingTokens, endpoint, make_config, running_proxy
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "HEAD_TIMEOUT", 0.5)
    monkeypatch.setattr(relay, "IDLE_TIMEOUT", 30.0)
    monkeypatch.setattr(context, "IDLE_TIMEOUT", 30.0)


async def _trickle(port: int, data: bytes, interval: float, budget: float) -> tuple[bytes, float]:
    """Send ``data`` a byte per ``interval``; return what came back and when it closed."""
    started = time.monotonic()
    async with connection(port) as (reader, writer):

        async def send() -> None:
            for byte in data:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(interval)

        sender = asyncio.create_task(send())
        try:
            raw = await asyncio.wait_for(read_all(reader), budget)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return raw, time.monotonic() - started


@pytest.mark.usefixtures("short_deadlines")
async def test_a_trickled_head_is_cut_off_by_the_head_deadline(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    head = f"GET http://alpha.localhost:{port}/ HTTP/1.1\r\nHost: a\r\nX-Pad: {'p' * 200}\r\n"
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        raw, took = await _trickle(rp.port, head.encode(), 0.05, budget=5)
    assert took < 5  # closed by the proxy long before the head could have finished
    replies = parse_replies(raw)
    assert [r.status for r in replies] == [408]
    assert replies[0].json()["error"] == "invalid_request"
    assert plain_upstream.connections == 0


@pytest.mark.usefixtures("short_deadlines")
async def test_an_idle_kept_alive_connection_is_not_cut_by_the_head_deadline(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    request = f"GET http://alpha.localhost:{port}/ HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    async with (
        running_proxy(config, RecordingTokens(), tmp_path) as rp,
        connection(rp.port) as (reader, writer),
    ):
        writer.write(request)
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"}"), 5)
        await asyncio.sleep(1.0)  # idle for twice the head deadline
        writer.write(request[:-2] + b"Connection: close\r\n\r\n")
        await writer.drain()
        rest = await read_all(reader, timeout=5)
    assert first.startswith(b"HTTP/1.1 200")
    assert rest.startswith(b"HTTP/1.1 200")
    assert len(plain_upstream.requests) == 2


@pytest.mark.usefixtures("short_deadlines")
async def test_a_stalled_request_body_does_not_hold_the_upstream_connection(
    plain_upstream: RecordingUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Head sent, body promised and never finished: after the idle timeout the proxy gives
    up on the agent and closes the upstream connection it opened for it."""
    monkeypatch.setattr(relay, "IDLE_TIMEOUT", 0.5)
    port = plain_upstream.port
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    started = time.monotonic()
    async with (
        running_proxy(config, RecordingTokens(), tmp_path) as rp,
        connection(rp.port) as (reader, writer),
    ):
        writer.write(
            f"POST http://alpha.localhost:{port}/ HTTP/1.1\r\nHost: a\r\n"
            "Content-Length: 10\r\n\r\nab".encode()
        )
        await writer.drain()
        raw = await read_all(reader, timeout=5)
    took = time.monotonic() - started
    assert took < 4, took
    assert plain_upstream.connections == 1 and plain_upstream.requests == []
    assert raw == b"" or parse_replies(raw)[0].status >= 400


async def test_a_flood_of_empty_lines_before_a_request_is_ignored_in_bulk(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """RFC 9112 §2.2 lets a server skip empty lines before a request line. They are skipped
    in one step per read (not a CRLF at a time, which made 64 MiB of CRLFs cost ~10 s of
    proxy CPU), and what follows them is still parsed strictly."""
    port = plain_upstream.port
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    request = f"GET http://alpha.localhost:{port}/ HTTP/1.1\r\nHost: a\r\n".encode()
    async with (
        running_proxy(config, RecordingTokens(), tmp_path) as rp,
        connection(rp.port) as (reader, writer),
    ):
        for _ in range(16):
            writer.write(b"\r\n" * 65536)
            await writer.drain()
        writer.write(request + b"\r\n" + b"\r\n\r\n" + request + b"Connection: close\r\n\r\n")
        raw = await read_all(reader, timeout=30)
        bare_lf = await send_raw(rp.port, b"\n" + request + b"\r\n")
    assert [r.status for r in parse_replies(raw)] == [200, 200]
    assert len(plain_upstream.requests) == 2
    assert [r.status for r in parse_replies(bare_lf)] == [400]
