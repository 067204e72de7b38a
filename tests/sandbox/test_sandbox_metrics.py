"""A real sandbox's proxy metrics reach the gateway's ``/metrics`` through heartbeats."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.sandbox_stack import Stack, running_stack

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


def _value(text: str, series: str) -> float | None:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def _scrape(stack: Stack) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{stack.server.url}/metrics")).text


async def test_agent_requests_are_counted_on_the_gateway_until_delete(stack: Stack) -> None:
    policy = stack.gw.write("policy.yaml", stack.policy())
    # Three allowed requests, then one the policy denies; then the agent idles.
    script = (
        f"for i in 1 2 3; do curl -s -o /dev/null {stack.alpha_url}/metered/$i; done;"
        " curl -s -o /dev/null http://denied.localhost/; echo done-metered; sleep 600"
    )
    await asyncio.to_thread(
        stack.gw.json, "sandbox", "create", "--name", "metered", "--policy", policy,
        "--", "sh", "-c", script,
    )  # fmt: skip
    allowed = 'grantbox_proxy_requests_total{code="",decision="allowed",sandbox="metered"}'
    denied = (
        'grantbox_proxy_requests_total{code="policy_denied",decision="denied",sandbox="metered"}'
    )
    # A deadline for a loaded machine (heartbeats come every 5 s), not a speed claim.
    deadline = time.monotonic() + 60
    text = await _scrape(stack)
    while _value(text, allowed) != 3.0 or _value(text, denied) != 1.0:
        assert time.monotonic() < deadline, f"no metrics of the sandbox's requests:\n{text}"
        await asyncio.sleep(0.5)
        text = await _scrape(stack)
    assert len([r for r in stack.upstream.requests if r.target.startswith("/metered/")]) == 3
    assert 'grantbox_supervisor_outbox_capacity{kind="events",sandbox="metered"}' in text

    await asyncio.to_thread(stack.gw.run, "sandbox", "delete", "metered")
    assert 'sandbox="metered"' not in await _scrape(stack)
