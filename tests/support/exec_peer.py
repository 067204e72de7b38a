"""The supervisor's side of exec for gateway and CLI tests that need no fence.

It is the real supervisor exec code (:mod:`grantbox.supervisor.exec_session`, over the real
supervisor client and the gateway's real HTTP API); only the command runs as a plain local
process instead of inside a sandbox. It records every command it was handed, so a test
can check exactly what reached the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from grantbox.drivers import SandboxSpec
from grantbox.supervisor.exec_session import run_exec
from grantbox.supervisor.gateway_client import ExecRequestItem, SupervisorClient


class ExecPeer:
    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.received: list[ExecRequestItem] = []
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _start(
        self, stdin: int | None, stdout: int | None, stderr: int | None
    ) -> asyncio.subprocess.Process:
        item = self.received[-1]
        return await asyncio.create_subprocess_exec(
            *item.command, stdin=stdin, stdout=stdout, stderr=stderr
        )

    async def _main(self) -> None:
        spec = self.spec
        async with SupervisorClient(spec.gateway_url, spec.sandbox_id, spec.supervisor_token) as c:
            await c.heartbeat()
            while not self._stop.is_set():
                poll = asyncio.create_task(c.next_exec(1.0))
                stop = asyncio.create_task(self._stop.wait())
                await asyncio.wait({poll, stop}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if not poll.done():
                    poll.cancel()
                    break
                item = poll.result()
                if item is not None:
                    self.received.append(item)
                    await run_exec(c, item, self._start)

    def _serve(self) -> None:
        self._loop.run_until_complete(self._main())

    def heartbeat(self) -> None:
        async def beat() -> None:
            spec = self.spec
            async with SupervisorClient(
                spec.gateway_url, spec.sandbox_id, spec.supervisor_token
            ) as c:
                await c.heartbeat()

        asyncio.run(beat())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@contextlib.contextmanager
def exec_peer(spec: SandboxSpec) -> Iterator[ExecPeer]:
    peer = ExecPeer(spec)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
