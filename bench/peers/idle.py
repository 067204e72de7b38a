"""Memory per idle connection: open many, leave them open and silent, read the proxy's RSS.

Two kinds of idle connection, measured one after the other on each route:

* *fresh*: connected, nothing sent (what an agent that opens connections and waits costs);
* *used*: one request answered through the proxy, then kept alive and silent, so the proxy
  holds what it keeps for a used keep-alive connection (buffers, parser state, its
  upstream side). A proxy that closes connections after each answer holds none of these.

The proxy's resident memory (its whole process tree) is read before and after; the
difference over the connections still open is the cost of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Callable
from dataclasses import dataclass

import h11

BATCH = 50  # connections opened at once
SETTLE_SECONDS = 2.0

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class IdleResult:
    wanted: int
    held: int  # connections still open when memory was read
    rss_before_kib: int
    rss_after_kib: int
    failures: tuple[str, ...]  # first few reasons connections failed

    @property
    def per_connection_kib(self) -> float | None:
        if not self.held:
            return None
        return (self.rss_after_kib - self.rss_before_kib) / self.held


@dataclass(frozen=True)
class IdlePair:
    fresh: IdleResult
    used: IdleResult


def raise_file_limit(wanted: int) -> None:
    """Lift the soft descriptor limit toward the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, wanted))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, host: str
) -> None:
    """One GET on the connection, read to the end of the answer; raises unless 200."""
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target=target, headers=[("Host", host)])
    writer.write(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
    status = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("closed before the answer ended")
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            break
    if status != 200:
        raise ConnectionError(f"answered {status}")


async def _open(
    connect: tuple[str, int], request: tuple[str, str] | None, patience: float
) -> tuple[Connection | None, str]:
    """A connection, used once when ``request`` (target, host) is given."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(patience):
            reader, writer = await asyncio.open_connection(*connect)
            if request is not None:
                await _request(reader, writer, *request)
            return (reader, writer), ""
    except (OSError, TimeoutError, h11.ProtocolError) as exc:
        if writer is not None:
            writer.close()
        return None, str(exc) or type(exc).__name__


async def hold_idle(
    connect: tuple[str, int],
    request: tuple[str, str] | None,
    count: int,
    rss: Callable[[], int],
    *,
    patience: float = 20.0,
) -> IdleResult:
    """Open ``count`` connections to ``connect`` (each used once for ``request`` when set),
    let them sit, and read ``rss()`` before and after; ``patience`` bounds each opening."""
    before = rss()
    held: list[Connection] = []
    failures: list[str] = []
    try:
        for start in range(0, count, BATCH):
            batch = min(BATCH, count - start)
            opened = await asyncio.gather(
                *(_open(connect, request, patience) for _ in range(batch))
            )
            for connection, reason in opened:
                if connection is not None:
                    held.append(connection)
                elif len(failures) < 5:
                    failures.append(reason)
        await asyncio.sleep(SETTLE_SECONDS)
        after = rss()
        still_open = sum(1 for reader, _ in held if not reader.at_eof())
    finally:
        for _, writer in held:
            writer.close()
        for _, writer in held:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return IdleResult(count, still_open, before, after, tuple(failures))
