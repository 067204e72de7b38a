"""An upstream that sends more than its answer cannot answer the agent's next request.

Bytes past a response (a second response "in advance", say) are never relayed and never
read as the answer to a later request: the upstream connection they came on is dropped, and
the next request gets its own answer on a fresh connection. Both readers of upstream answers
are covered: the fast one (Content-Length) and h11 (chunked). h11 alone keeps such bytes
for the next exchange.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import h11
import pytest

from tests.support.proxy_clients import connection
from tests.support.proxy_harness import RecordingTokens, endpoint, make_config, running_proxy

from .conftest import LOOPBACK

SMUGGLED = b"HTTP/1.1 200 OK\r\nSet-Cookie: evil=1\r\nContent-Length: 4\r\n\r\nEVIL"
FIRST = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
]


@pytest.mark.parametrize("first", FIRST, ids=["content-length", "chunked"])
async def test_bytes_past_an_answer_never_answer_the_next_request(
    first: bytes, tmp_path: Path
) -> None:
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                requests.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))
                if len(requests) == 1:  # the first answer, and one "in advance" with it
                    writer.write(first + SMUGGLED)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = make_config(policy=[endpoint("beta.localhost", port, allowed_ips=LOOPBACK)])
    received = bytearray()
    try:
        async with (
            running_proxy(config, RecordingTokens(), tmp_path) as rp,
            connection(rp.port) as (reader, writer),
        ):
            agent = h11.Connection(h11.CLIENT)
            bodies = []
            for n in range(2):
                request = h11.Request(
                    method="GET",
                    target=f"http://beta.localhost:{port}/{n}",
                    headers=[("Host", "beta.localhost")],
                )
                writer.write(agent.send(request) + agent.send(h11.EndOfMessage()))
                await writer.drain()
                body = bytearray()
                while True:
                    event = agent.next_event()
                    if event is h11.NEED_DATA:
                        data = await asyncio.wait_for(reader.read(65536), 10)
                        received += data
                        agent.receive_data(data)
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                bodies.append(bytes(body))
                agent.start_next_cycle()
    finally:
        server.close()
    assert bodies == [b"abc", b"good"]
    assert b"EVIL" not in received and b"evil" not in received
    assert len(requests) == 2
