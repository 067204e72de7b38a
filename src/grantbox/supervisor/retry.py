"""How the supervisor retries the gateway: one schedule for every loop, run by stamina.

Waits grow from 0.5 s to 5 s with jitter and never give up on their own: a supervisor whose
gateway is away keeps trying until the gateway answers, says the sandbox is gone, or the
supervisor is stopped (which cancels the waiting task).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import stamina

from .gateway_client import SupervisorClientError

T = TypeVar("T")

log = logging.getLogger("grantbox.supervisor")

WAIT_INITIAL = 0.5
WAIT_MAX = 5.0
WAIT_JITTER = 0.5


def transient(exc: Exception) -> bool:
    """Worth another attempt: the gateway was unreachable or failed, not a refusal."""
    return isinstance(exc, SupervisorClientError) and (exc.status in (0, 429) or exc.status >= 500)


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: Callable[[Exception], bool] = transient,
    traceback: bool = False,
) -> T:
    """``await call()`` until it succeeds; exceptions ``retry_on`` refuses propagate."""

    def hook(exc: Exception) -> bool:
        # Cancellation reaches the hook too (tenacity records any BaseException): never retry it.
        if not isinstance(exc, Exception) or not retry_on(exc):
            return False
        if traceback:
            log.error("%s failed; retrying", what, exc_info=exc)
        else:
            log.warning("%s failed (%s); retrying", what, exc)
        return True

    async for attempt in stamina.retry_context(
        on=hook,
        attempts=None,
        timeout=None,
        wait_initial=WAIT_INITIAL,
        wait_max=WAIT_MAX,
        wait_jitter=WAIT_JITTER,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: retry_context without a limit ends only by returning")
