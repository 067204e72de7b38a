"""The exec channel: operators queue commands, supervisors pick them up and stream back.

The gateway never connects to a sandbox. A supervisor long-polls for the next request of
its own sandbox, runs it, fetches the operator's input (stdin bytes, terminal resizes) with
another long-poll, and posts output chunks and the exit code; the operator's request
streams those back as they arrive.

Every buffer here is bounded in bytes, in both directions. When the operator reads slowly
the output buffer fills and a supervisor's post waits for room (and after a while answers
"busy, retry"), so the supervisor stops reading the command's pipe and the command blocks
on its writes: back-pressure reaches the producer instead of the gateway's memory. State is
in memory: an exec does not survive a gateway restart, and the operator sees that as an
error rather than a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

MAX_PENDING_PER_SANDBOX = 16
OUTPUT_BUFFER_BYTES = 1024 * 1024
INPUT_BUFFER_BYTES = 256 * 1024
ROOM_WAIT_SECONDS = 5.0  # how long a post waits for room before answering "busy"
MAX_INPUT_BATCH = 64 * 1024


class Delivery(Enum):
    ACCEPTED = "accepted"
    BUSY = "busy"  # no room in time: retry the same chunk
    GONE = "gone"  # no such exec (finished, abandoned, or another sandbox's)


@dataclass(frozen=True, slots=True)
class ExecRequest:
    exec_id: str
    sandbox_id: str
    command: tuple[str, ...]
    timeout_seconds: float
    stdin: bool = False
    tty: bool = False
    rows: int = 0
    cols: int = 0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "exec_id": self.exec_id,
            "command": list(self.command),
            "timeout_seconds": self.timeout_seconds,
            "stdin": self.stdin,
            "tty": self.tty,
        }
        if self.tty and self.rows and self.cols:
            data["rows"], data["cols"] = self.rows, self.cols
        return data


class BoundedPipe:
    """A FIFO of items with byte accounting: ``put`` waits while it is full.

    An item larger than the whole capacity is still admitted into an empty pipe (else it
    could never pass), so the pipe never holds more than ``max(capacity, largest item)``.
    Control items (exit, error, end of input) go in with :meth:`put_control`, which ignores
    the capacity: they are a few bytes and must never wait behind data.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self.peak = 0
        self.closed = False
        self._items: deque[tuple[dict[str, Any], int]] = deque()
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        # Waiters hold the old event; a fresh one serves the next wait (no lock needed:
        # every change happens on the event loop's thread).
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _until(self, predicate: Callable[[], bool], wait: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    def _fits(self, size: int) -> bool:
        return self.closed or self.size == 0 or self.size + size <= self.capacity

    async def put(self, item: dict[str, Any], size: int, wait: float) -> Delivery:
        if not await self._until(lambda: self._fits(size), wait):
            return Delivery.BUSY
        if self.closed:
            return Delivery.GONE
        self._append(item, size)
        return Delivery.ACCEPTED

    def put_control(self, item: dict[str, Any]) -> None:
        self._append(item, 0)

    def _append(self, item: dict[str, Any], size: int) -> None:
        self._items.append((item, size))
        self.size += size
        self.peak = max(self.peak, self.size)
        self._notify()

    def _pop(self) -> dict[str, Any]:
        item, size = self._items.popleft()
        self.size -= size
        self._notify()
        return item

    async def get(self, wait: float) -> dict[str, Any] | None:
        """The oldest item, or ``None`` when nothing arrives in time or the pipe closed."""
        await self._until(lambda: bool(self._items) or self.closed, wait)
        return self._pop() if self._items else None

    async def drain(self, wait: float, max_bytes: int) -> list[dict[str, Any]]:
        """Everything waiting (up to about ``max_bytes``), after waiting for the first."""
        first = await self.get(wait)
        if first is None:
            return []
        batch, taken = [first], len(str(first.get("data", "")))
        while self._items and taken < max_bytes:
            taken += self._items[0][1]
            batch.append(self._pop())
        return batch

    def close(self) -> None:
        self.closed = True
        self._notify()


@dataclass(slots=True)
class _Session:
    request: ExecRequest
    output: BoundedPipe = field(default_factory=lambda: BoundedPipe(OUTPUT_BUFFER_BYTES))
    input: BoundedPipe = field(default_factory=lambda: BoundedPipe(INPUT_BUFFER_BYTES))
    picked_up: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False


class ExecRelay:
    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Queue[ExecRequest]] = {}
        self._sessions: dict[str, _Session] = {}
        self.peak_output_bytes = 0  # the most any one exec's output buffer ever held

    def _queue(self, sandbox_id: str) -> asyncio.Queue[ExecRequest]:
        return self._pending.setdefault(sandbox_id, asyncio.Queue(MAX_PENDING_PER_SANDBOX))

    def submit(
        self,
        sandbox_id: str,
        command: tuple[str, ...],
        timeout: float,
        *,
        stdin: bool = False,
        tty: bool = False,
        rows: int = 0,
        cols: int = 0,
    ) -> ExecRequest:
        request = ExecRequest(
            uuid.uuid4().hex, sandbox_id, command, timeout, stdin, tty, rows, cols
        )
        queue = self._queue(sandbox_id)
        queue.put_nowait(request)  # raises asyncio.QueueFull when a sandbox is flooded
        self._sessions[request.exec_id] = _Session(request)
        return request

    async def next_request(self, sandbox_id: str, seconds: float) -> ExecRequest | None:
        """The next request for this sandbox, or ``None`` when none arrives in time."""
        queue = self._queue(sandbox_id)
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return None
            try:
                request = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                return None
            session = self._sessions.get(request.exec_id)
            if session is None or session.finished:
                continue  # the operator gave up before pickup
            session.picked_up.set()
            return request

    def return_request(self, request: ExecRequest) -> None:
        """Put back a request whose poller disconnected before it could be delivered."""
        session = self._sessions.get(request.exec_id)
        if session is None or session.finished:
            return
        session.picked_up.clear()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue(request.sandbox_id).put_nowait(request)

    def session_of(self, sandbox_id: str, exec_id: str) -> _Session | None:
        """The open session only when it belongs to this sandbox."""
        session = self._sessions.get(exec_id)
        if session is None or session.request.sandbox_id != sandbox_id or session.finished:
            return None
        return session

    # -- supervisor side ------------------------------------------------------------------

    async def output(
        self, sandbox_id: str, exec_id: str, stream: str, data: str, wait: float = ROOM_WAIT_SECONDS
    ) -> Delivery:
        session = self.session_of(sandbox_id, exec_id)
        if session is None:
            return Delivery.GONE
        outcome = await session.output.put({"stream": stream, "data": data}, len(data), wait)
        self.peak_output_bytes = max(self.peak_output_bytes, session.output.peak)
        return outcome

    def exit(self, sandbox_id: str, exec_id: str, exit_code: int) -> bool:
        session = self.session_of(sandbox_id, exec_id)
        if session is None:
            return False
        session.finished = True
        session.output.put_control({"exit_code": exit_code})
        session.input.close()
        return True

    async def next_input(
        self, sandbox_id: str, exec_id: str, wait: float
    ) -> list[dict[str, Any]] | None:
        """The operator's waiting input items (``[]`` when none came in time), or ``None``
        when the exec is gone."""
        session = self.session_of(sandbox_id, exec_id)
        if session is None:
            return None
        return await session.input.drain(wait, MAX_INPUT_BATCH)

    # -- operator side --------------------------------------------------------------------

    async def input(
        self,
        sandbox_id: str,
        exec_id: str,
        data: str,
        eof: bool,
        wait: float = ROOM_WAIT_SECONDS,
    ) -> Delivery:
        session = self.session_of(sandbox_id, exec_id)
        if session is None or not session.request.stdin:
            return Delivery.GONE
        if data:
            outcome = await session.input.put({"data": data}, len(data), wait)
            if outcome is not Delivery.ACCEPTED:
                return outcome
        if eof:
            session.input.put_control({"eof": True})
        return Delivery.ACCEPTED

    def resize(self, sandbox_id: str, exec_id: str, rows: int, cols: int) -> bool:
        session = self.session_of(sandbox_id, exec_id)
        if session is None or not session.request.tty:
            return False
        session.input.put_control({"resize": [rows, cols]})
        return True

    def fail_sandbox(self, sandbox_id: str, reason: str) -> None:
        """End every open exec of a sandbox (it is being deleted or restarted)."""
        for session in list(self._sessions.values()):
            if session.request.sandbox_id == sandbox_id and not session.finished:
                session.finished = True
                session.output.put_control({"error": reason})
                session.input.close()
        self._pending.pop(sandbox_id, None)

    async def stream(self, exec_id: str, pickup_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """Items for the operator: the exec id first (where to send input), then output
        chunks until exit, error, or no supervisor picks it up in time."""
        session = self._sessions.get(exec_id)
        if session is None:
            yield {"error": "unknown exec"}
            return
        try:
            yield {"exec_id": exec_id}
            try:
                await asyncio.wait_for(session.picked_up.wait(), pickup_timeout)
            except TimeoutError:
                yield {"error": f"no supervisor picked the command up within {pickup_timeout:g} s"}
                return
            # The supervisor stops the command at its timeout and reports 124; allow for that.
            limit = session.request.timeout_seconds + ROOM_WAIT_SECONDS * 2
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limit
            while True:
                remaining = deadline - loop.time()
                item = await session.output.get(remaining) if remaining > 0 else None
                if item is None:
                    yield {"error": f"no exit from the sandbox within {limit:g} s"}
                    return
                yield item
                if "exit_code" in item or "error" in item:
                    return
        finally:
            session.finished = True
            self._sessions.pop(exec_id, None)
            session.output.close()
            session.input.close()
