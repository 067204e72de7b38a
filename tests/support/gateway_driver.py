"""An in-memory compute driver for the gateway's own API tests.

It starts nothing: it records what the gateway asked for and reports the statuses a test
tells it to, so the gateway's handling of driver outcomes can be checked over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grantbox.drivers import DriverError, DriverState, DriverStatus, SandboxSpec


class RecordingDriver:
    def __init__(self) -> None:
        self.created: list[SandboxSpec] = []
        self.deleted: list[str] = []
        self.statuses: dict[str, DriverStatus] = {}
        self.fail_create: str = ""
        self.fail_delete: str = ""
        self._events: asyncio.Queue[tuple[str, DriverStatus]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _queue(self) -> asyncio.Queue[tuple[str, DriverStatus]]:
        if self._events is None:
            self._events = asyncio.Queue()
            self._loop = asyncio.get_running_loop()
        return self._events

    async def create(self, spec: SandboxSpec) -> None:
        if self.fail_create:
            raise DriverError(self.fail_create)
        self.created.append(spec)
        self.statuses[spec.sandbox_id] = DriverStatus(DriverState.RUNNING, "recorded")
        self._queue().put_nowait((spec.sandbox_id, self.statuses[spec.sandbox_id]))

    async def delete(self, sandbox_id: str) -> None:
        if self.fail_delete:
            raise DriverError(self.fail_delete)
        self.deleted.append(sandbox_id)
        self.statuses.pop(sandbox_id, None)

    async def status(self, sandbox_id: str) -> DriverStatus:
        return self.statuses.get(sandbox_id, DriverStatus(DriverState.UNKNOWN))

    async def watch(self) -> AsyncIterator[tuple[str, DriverStatus]]:
        queue = self._queue()
        while True:
            yield await queue.get()

    def report(self, sandbox_id: str, status: DriverStatus) -> None:
        """Push a status from a test thread, as a real driver's watcher would."""
        self.statuses[sandbox_id] = status
        assert self._loop is not None, "the gateway has not started watching yet"
        queue = self._queue_for_threads()
        self._loop.call_soon_threadsafe(queue.put_nowait, (sandbox_id, status))

    def _queue_for_threads(self) -> asyncio.Queue[tuple[str, DriverStatus]]:
        assert self._events is not None
        return self._events
