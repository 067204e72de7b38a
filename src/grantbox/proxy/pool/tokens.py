"""A worker's token source: the parent's grant engine, asked over the channel.

The engine (and so the identity socket, the SVIDs and the single-flight per binding) stays
in the parent; a worker asks it on a miss and reuses an answer for at most
:data:`REUSE_SECONDS`, never past the token's expiry, so a token the engine renews or drops
is out of every worker within that time. A new config drops every reused token at once.
Requests of one worker for the same binding share one question.

The worker counts what its reuse saves in the grant engine's own cache counters
(``grantbox_token_cache_hits``, ``…_coalesced_waits``); the pool sums them with the
engine's, which counts the questions, so the pool's figures count requests, as one
process's do.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from grantbox.grants import GrantMetrics
from grantbox.profiles import BindingSet, GrantBinding

from .wire import error_from_wire

# How long a worker serves a token it was given before asking the parent again.
REUSE_SECONDS = 1.0

# Ask the parent: (config revision, binding id) -> the answer message.
Ask = Callable[[str, str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ParentToken:
    value: str = field(repr=False)


class ParentTokens:
    """:class:`grantbox.proxy.TokenSource` for a pool worker."""

    def __init__(
        self,
        ask: Ask,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: GrantMetrics | None = None,
    ) -> None:
        self._ask = ask
        self._clock = clock
        self._metrics = metrics if metrics is not None else GrantMetrics()
        self._revision = ""
        self._reused: dict[GrantBinding, tuple[ParentToken, float]] = {}
        self._asking: dict[GrantBinding, asyncio.Task[ParentToken]] = {}

    def replace_bindings(self, bindings: BindingSet) -> None:
        self._reused.clear()
        self._asking.clear()  # questions under way answer their callers, not later ones

    def use_revision(self, revision: str) -> None:
        """The config revision whose bindings the parent is asked about."""
        self._revision = revision

    async def obtain(self, binding: GrantBinding) -> ParentToken:
        held = self._reused.get(binding)
        if held is not None:
            token, until = held
            if self._clock() < until:
                self._metrics.hits.inc()
                return token
            del self._reused[binding]
        asking = self._asking.get(binding)
        if asking is not None:
            self._metrics.coalesced.inc()
        else:
            # A task of its own: a caller that goes away does not cancel the others' answer.
            asking = asyncio.get_running_loop().create_task(self._question(binding))
            self._asking[binding] = asking
            asking.add_done_callback(functools.partial(self._answered, binding))
        return await asyncio.shield(asking)

    def _answered(self, binding: GrantBinding, task: asyncio.Task[ParentToken]) -> None:
        if self._asking.get(binding) is task:
            del self._asking[binding]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter re-raises it

    async def _question(self, binding: GrantBinding) -> ParentToken:
        revision = self._revision
        answer = await self._ask(revision, binding.id)
        if "error" in answer:
            raise error_from_wire(answer["error"])
        token = ParentToken(str(answer["value"]))
        remaining = float(answer.get("remaining", 0.0))
        reuse = min(REUSE_SECONDS, remaining)
        if reuse > 0 and revision == self._revision:
            self._reused[binding] = (token, self._clock() + reuse)
        return token
