"""A shipping backlog is a condition of a ready sandbox, not an error (DESIGN §3.5 #11).

Real parts: gateway, identity agent, local driver, supervisor, fence, proxy, token endpoint
and upstream; between the supervisor and the gateway a relay (``GatewayFront``) that answers
503 to log batches while it is told to, so the supervisor's log outbox backs up while its
heartbeats, events and everything else get through.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway_front import GatewayFront, running_front
from tests.support.sandbox_stack import Stack, running_stack

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


@pytest.fixture
def front(stack: Stack) -> AsyncIterator[GatewayFront]:
    with running_front(stack.server.url) as relay:
        stack.server.gateway.orchestrator.gateway_url = relay.url
        yield relay


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.2)


def backlog(view: dict[str, Any]) -> dict[str, Any]:
    """The ShippingBacklog condition ({} before the first heartbeat)."""
    found = [c for c in view["conditions"] if c["type"] == "ShippingBacklog"]
    assert len(found) <= 1, view
    return found[0] if found else {}


async def test_a_backlog_shows_as_a_condition_while_the_sandbox_stays_ready(
    stack: Stack, front: GatewayFront
) -> None:
    stack.gw.ok("profile", "import", "-f", stack.gw.write("alpha.yaml", stack.profile()))
    stack.gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    front.refuse("POST", "/logs", 503)
    agent = f"seq 1 6000; curl -s -o /dev/null {stack.alpha_url}/while-backlogged; sleep 600"
    await asyncio.to_thread(
        stack.gw.json, "sandbox", "create", "--name", "busy", "--provider", "pa",
        "--", "sh", "-c", agent,
    )  # fmt: skip

    def view() -> dict[str, Any]:
        return dict(stack.gw.json("sandbox", "get", "busy"))

    await until(lambda: backlog(view()).get("status") == "True", 60, "ShippingBacklog True")
    current = view()
    assert current["phase"] == "ready", current
    assert current["phase_reason"] == ""
    condition = backlog(current)
    assert condition["reason"] == "Backlogged"
    assert "6000 log lines waiting for the gateway" in condition["message"]
    assert "ShippingBacklog: " in stack.gw.ok("sandbox", "get", "busy").stdout

    # Events still ship while log lines cannot.
    def events() -> str:
        return str(stack.gw.run("sandbox", "events", "busy", "-o", "json").stdout)

    await until(lambda: "while-backlogged" in events(), 30, "the request's event")
    assert stack.gw.run("sandbox", "logs", "busy", "-o", "json").stdout.strip() in ("", "[]")

    front.allow("POST", "/logs")
    await until(lambda: backlog(view()).get("status") == "False", 60, "ShippingBacklog False")
    drained = backlog(view())
    assert drained["reason"] == "UpToDate"
    assert drained["since"] > condition["since"]
    assert "lost so far" not in drained["message"]
    lines = stack.gw.run("sandbox", "logs", "busy", "-o", "json", "--tail", "-1").stdout
    messages = [json.loads(line)["message"] for line in lines.splitlines() if line.strip()]
    assert messages[:6000] == [str(i) for i in range(1, 6001)]
    assert view()["phase"] == "ready"
    assert 503 in front.answered("POST", "/logs")
