"""The wait for the next request head: one timer per connection, moved by every request.

A connection that keeps sending requests is never cut by the idle timeout (the timer armed
for an earlier deadline re-arms for the current one); one that goes quiet is closed after
it; a head that has started has the shorter head timeout; a proxy stopping is not read as
a timeout.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from grantbox.proxy import Limits
from tests.support.proxy_clients import connection, parse_replies, read_all, read_reply
from tests.support.proxy_harness import RecordingTokens, endpoint, make_config, running_proxy
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK

IDLE = 0.4


def _request(port: int) -> bytes:
    return f"GET http://alpha.localhost:{port}/ HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n".encode()


async def test_a_busy_connection_outlives_several_idle_timeouts(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    limits = Limits(idle_timeout=IDLE, head_timeout=IDLE)
    started = time.monotonic()
    statuses = []
    async with (
        running_proxy(config, RecordingTokens(), tmp_path, limits=limits) as rp,
        connection(rp.port) as (reader, writer),
    ):
        while time.monotonic() - started < 4 * IDLE:
            writer.write(_request(port))
            await writer.drain()
            statuses.append((await read_reply(reader)).status)
            await asyncio.sleep(IDLE / 4)
    assert len(statuses) >= 8 and set(statuses) == {200}
    assert plain_upstream.connections == 1  # one agent connection all along, one upstream


async def test_a_quiet_connection_is_closed_after_the_idle_timeout(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    limits = Limits(idle_timeout=IDLE, head_timeout=10 * IDLE)
    async with (
        running_proxy(config, RecordingTokens(), tmp_path, limits=limits) as rp,
        connection(rp.port) as (reader, writer),
    ):
        writer.write(_request(port))
        await writer.drain()
        assert (await read_reply(reader)).status == 200
        rest = await read_all(reader, timeout=30)  # returns when the proxy closes
    assert rest == b""  # closed without an answer: nothing had started


async def test_a_started_head_has_the_head_timeout(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    limits = Limits(idle_timeout=30.0, head_timeout=IDLE)
    async with (
        running_proxy(config, RecordingTokens(), tmp_path, limits=limits) as rp,
        connection(rp.port) as (reader, writer),
    ):
        writer.write(_request(port))
        await writer.drain()
        assert (await read_reply(reader)).status == 200
        writer.write(_request(port)[:20])  # the next head starts, and never ends
        await writer.drain()
        rest = await read_all(reader, timeout=30)
    assert [reply.status for reply in parse_replies(rest)] == [408]


async def test_stopping_the_proxy_ends_a_waiting_connection_without_an_answer(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    limits = Limits(idle_timeout=30.0, head_timeout=30.0)
    async with running_proxy(config, RecordingTokens(), tmp_path, limits=limits) as rp:
        reader, writer = await asyncio.open_connection("127.0.0.1", rp.port)
        writer.write(_request(port))
        await writer.drain()
        assert (await read_reply(reader)).status == 200
        writer.write(_request(port)[:20])  # a head has started: a timeout would be a 408
        await writer.drain()
        await asyncio.sleep(0.1)
        await asyncio.wait_for(rp.proxy.stop(), 10)  # while the connection waits for the rest
        rest = await read_all(reader, timeout=10)
        writer.close()
    assert rest == b""  # a stop is not a timeout: no 408, just the end
