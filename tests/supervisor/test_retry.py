"""The supervisor's one retry schedule: transient failures retried, refusals and stops not."""

from __future__ import annotations

import asyncio

import pytest

from grantbox.supervisor import retry
from grantbox.supervisor.gateway_client import SupervisorClientError


@pytest.fixture(autouse=True)
def _short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "WAIT_INITIAL", 0.01)
    monkeypatch.setattr(retry, "WAIT_MAX", 0.02)
    monkeypatch.setattr(retry, "WAIT_JITTER", 0.0)


@pytest.mark.parametrize("status", [0, 429, 500, 503])
async def test_transient_failures_are_retried_until_an_answer(status: int) -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise SupervisorClientError("gateway unreachable", status)
        return 7

    assert await retry.retrying(flaky, what="test") == 7
    assert calls == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413])
async def test_refusals_propagate_at_once(status: int) -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise SupervisorClientError("refused", status)

    with pytest.raises(SupervisorClientError):
        await retry.retrying(refused, what="test")
    assert calls == 1


async def test_a_stop_cancels_the_waiting_loop() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise SupervisorClientError("gateway unreachable", 0)

    task = asyncio.ensure_future(retry.retrying(down, what="test"))
    while calls < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    seen = calls
    await asyncio.sleep(0.1)
    assert calls == seen  # nothing runs after the cancel
