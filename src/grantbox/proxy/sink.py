"""A bounded asynchronous event sink: requests hand events over and never wait for them.

:class:`EventQueue` takes each event without blocking; a background task writes them in
batches (JSON lines, one write per batch, in a worker thread so a slow reader of stdout
blocks only that thread). When the queue is full the new event is dropped and counted in
``grantbox_proxy_events_dropped_total``: a request never waits for the record.

Events are encoded with orjson, about ten times faster than the standard library's encoder
(one encoding per proxied request, so it shows in the proxy's rate). The bytes are exactly
what ``json`` writes with ``ensure_ascii``: an event holding anything but printable ASCII
(agent-sent text with C1 controls or line separators, say) is escaped by ``json`` instead,
so nothing agent-controlled reaches a terminal that tails the record unescaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("grantbox.proxy")

# Events written per batch at most (one write call each), and how long the writer lets
# events gather before writing them (one hand-off to the writer thread per interval).
BATCH = 512
GATHER_SECONDS = 0.05


_ESCAPING_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode

Event = dict[str, Any]


def event_json(event: Any) -> bytes:
    """An event (or any JSON value) as compact JSON, every byte printable ASCII
    (``\\uXXXX`` escapes): exactly ``json``'s bytes with ``ensure_ascii``, at orjson's
    speed where that gives the same bytes."""
    try:
        encoded = orjson.dumps(event)
    except TypeError:  # a type orjson does not take: json's reading of it
        encoded = b"\xff"
    if encoded.isascii() and b"\x7f" not in encoded:  # orjson escapes the rest as json does
        return encoded
    return _ESCAPING_ENCODE(event).encode("ascii")


def json_lines(events: Iterable[Event]) -> bytes:
    return b"".join(event_json(event) + b"\n" for event in events)


def _encoded(item: Event | Callable[[], Event] | bytes) -> bytes:
    if isinstance(item, bytes):
        return item
    return event_json(item if isinstance(item, dict) else item()) + b"\n"


def json_line(event: Event) -> str:
    return event_json(event).decode("ascii") + "\n"


class EventQueue:
    """Calls ``write`` with batches of JSON lines (bytes) from a background task.

    Use as ``events=queue`` for :class:`grantbox.proxy.EgressProxy`; :meth:`start` it on
    the running loop and :meth:`aclose` it to write what is left. The proxy hands it each
    event as a builder (:meth:`defer`): the event is built when its batch is written, not
    while the request waits.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        capacity: int,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._write = write
        self._capacity = capacity
        self._items: deque[Event | Callable[[], Event] | bytes] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = Counter(
            "grantbox_proxy_events_dropped",
            "OCSF events dropped because the event sink could not keep up.",
            registry=registry if registry is not None else CollectorRegistry(),
        )

    def __call__(self, event: Event) -> None:
        self.defer(event)

    def defer(self, event: Event | Callable[[], Event]) -> None:
        """Queue an event, or a function that builds it; never blocks."""
        if len(self._items) >= self._capacity:
            self.dropped.inc()
            return
        self._items.append(event)
        self._ready.set()

    def defer_encoded(self, lines: bytes) -> None:
        """Queue events already encoded as JSON lines (a proxy worker's batch, encoded by
        :func:`event_json` there); never blocks. A full queue drops and counts them all."""
        if len(self._items) >= self._capacity:
            self.dropped.inc(lines.count(b"\n"))
            return
        self._items.append(lines)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._items)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def aclose(self) -> None:
        """Stop the writer after writing every queued event."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._flush()

    async def _drain(self) -> None:
        while True:
            await self._ready.wait()
            await asyncio.sleep(GATHER_SECONDS)
            self._ready.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._items:
            count = min(BATCH, len(self._items))
            batch = [self._items.popleft() for _ in range(count)]
            try:
                # Built and encoded here (a thread running Python would contend with the
                # requests for the GIL); only the write itself, which may block, is handed
                # to a thread.
                data = b"".join(_encoded(item) for item in batch)
                await asyncio.to_thread(self._write, data)
            except Exception:  # the record's writer failing must not end the proxy
                log.exception("writing OCSF events failed; %d dropped", count)
                self.dropped.inc(count)
