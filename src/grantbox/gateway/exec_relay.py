"""The exec channel: operators queue commands, supervisors pick them up and stream back.

The gateway never connects to a sandbox. A supervisor long-polls for the next request of
its own sandbox, runs it, and posts output chunks and the exit code; the operator's request
streams those back as they arrive. State is in memory: an exec does not survive a gateway
restart, and the operator sees that as an error rather than a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

MAX_PENDING_PER_SANDBOX = 16


@dataclass(frozen=True, slots=True)
class ExecRequest:
    exec_id: str
    sandbox_id: str
    command: tuple[str, ...]
    timeout_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "exec_id": self.exec_id,
            "command": list(self.command),
            "timeout_seconds": self.timeout_seconds,
        }


@dataclass(slots=True)
class _Session:
    request: ExecRequest
    output: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    picked_up: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False


class ExecRelay:
    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Queue[ExecRequest]] = {}
        self._sessions: dict[str, _Session] = {}

    def _queue(self, sandbox_id: str) -> asyncio.Queue[ExecRequest]:
        return self._pending.setdefault(sandbox_id, asyncio.Queue(MAX_PENDING_PER_SANDBOX))

    def submit(self, sandbox_id: str, command: tuple[str, ...], timeout: float) -> ExecRequest:
        request = ExecRequest(uuid.uuid4().hex, sandbox_id, command, timeout)
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
        """The session only when it belongs to this sandbox."""
        session = self._sessions.get(exec_id)
        if session is None or session.request.sandbox_id != sandbox_id:
            return None
        return session

    def output(self, sandbox_id: str, exec_id: str, stream: str, data: str) -> bool:
        session = self.session_of(sandbox_id, exec_id)
        if session is None or session.finished:
            return False
        session.output.put_nowait({"stream": stream, "data": data})
        return True

    def exit(self, sandbox_id: str, exec_id: str, exit_code: int) -> bool:
        session = self.session_of(sandbox_id, exec_id)
        if session is None or session.finished:
            return False
        session.finished = True
        session.output.put_nowait({"exit_code": exit_code})
        return True

    def fail_sandbox(self, sandbox_id: str, reason: str) -> None:
        """End every open exec of a sandbox (it is being deleted)."""
        for session in list(self._sessions.values()):
            if session.request.sandbox_id == sandbox_id and not session.finished:
                session.finished = True
                session.output.put_nowait({"error": reason})
        self._pending.pop(sandbox_id, None)

    async def stream(self, exec_id: str, pickup_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """Chunks for the operator until exit, error, or no supervisor picks it up in time."""
        session = self._sessions.get(exec_id)
        if session is None:
            yield {"error": "unknown exec"}
            return
        try:
            try:
                await asyncio.wait_for(session.picked_up.wait(), pickup_timeout)
            except TimeoutError:
                yield {"error": f"no supervisor picked the command up within {pickup_timeout:g} s"}
                return
            limit = session.request.timeout_seconds
            while True:
                try:
                    item = await asyncio.wait_for(session.output.get(), limit)
                except TimeoutError:
                    yield {"error": f"no output or exit from the sandbox within {limit:g} s"}
                    return
                yield item
                if "exit_code" in item or "error" in item:
                    return
        finally:
            session.finished = True
            self._sessions.pop(exec_id, None)
