"""Wake long-polling supervisors when configuration changes.

Writes happen in worker threads; waiters live on the server's event loop. A waiter takes a
ticket *before* it reads the current revision, so a change that lands in between still
wakes it. Waiters also re-check on a short period, which covers writes made by another
gateway replica sharing the database.
"""

from __future__ import annotations

import asyncio
import contextlib


class ChangeFeed:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        if self._event is None:
            self.bind(asyncio.get_running_loop())
        assert self._event is not None
        return self._event

    def notify(self) -> None:
        """Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        previous = self._event
        self._event = asyncio.Event()
        if previous is not None:
            previous.set()

    @staticmethod
    async def wait(ticket: asyncio.Event, seconds: float) -> bool:
        """True when a change was signalled, False on timeout."""
        try:
            await asyncio.wait_for(ticket.wait(), seconds)
        except TimeoutError:
            return False
        return True
