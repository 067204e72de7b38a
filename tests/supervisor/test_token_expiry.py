"""A supervisor that cannot renew its token before it expires stops injecting and tears the
sandbox down (DESIGN §3.5 #10), whether the gateway is unreachable or refuses the renewal.

Real parts: gateway (supervisor tokens of 60 s, its shortest), identity agent, local driver,
supervisors, fence, proxy, token endpoint and upstream. Each sandbox reaches the gateway
through its own relay (``GatewayFront``): one relay goes away (the gateway is unreachable),
the other refuses token renewals only (heartbeats, config and shipping still work). The
token endpoint grants tokens of one second, so an agent that keeps calling makes a token
request about every second while its supervisor injects: after the teardown, none.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

import jwt
import pytest

from grantbox.drivers.local import LOG_FILE, TOKEN_FILE
from tests.support.gateway_front import running_front
from tests.support.sandbox_stack import Stack, running_stack
from tests.support.token_endpoint import Behaviour

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

TTL = 60
ORPHAN_LINE = "refusing all traffic and tearing the sandbox down"
EXPIRED = "the supervisor token expired before it could be renewed"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, supervisor_token_ttl=TTL) as running:
        yield running


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.1)


class Watched:
    """One sandbox's supervisor, followed until it is gone: its log and token file are
    copied while they exist (teardown removes them), and the token requests made in the
    sandbox's name are counted when the supervisor says it stops injecting."""

    def __init__(self, stack: Stack, sandbox_id: str, marker: str) -> None:
        self.stack = stack
        self.sandbox_id = sandbox_id
        self.marker = marker
        directory = stack.driver.state_dir(sandbox_id)
        assert directory is not None
        self.directory = directory
        self.log = ""
        self._log_file: BinaryIO | None = None
        self.expires_at = 0
        self.grants_at_orphan: int | None = None
        self.upstream_at_orphan: int | None = None

    @property
    def subject(self) -> str:
        return f"spiffe://example.org/grantbox/sandbox/{self.sandbox_id}"

    def grants(self) -> int:
        return self.stack.issuer.subjects.count(self.subject)

    def authorized(self) -> int:
        return sum(
            1
            for r in self.stack.upstream.requests
            if r.target.startswith(self.marker) and r.header("authorization")
        )

    def poll(self) -> bool:
        """True once the supervisor is gone; records what it said and when.

        The log is read through a descriptor kept open: the teardown removes the file
        moments after the supervisor's last line, and a file opened again on every poll
        could be gone before that line was read."""
        try:
            if self._log_file is None:
                self._log_file = (self.directory / LOG_FILE).open("rb")
            self.log += self._log_file.read().decode(errors="replace")
        except OSError:
            pass
        try:
            token = (self.directory / TOKEN_FILE).read_text().strip()
            claims = jwt.decode(token, options={"verify_signature": False})
            self.expires_at = max(self.expires_at, int(claims["exp"]))
        except (OSError, jwt.PyJWTError):
            pass
        if ORPHAN_LINE in self.log and self.grants_at_orphan is None:
            self.grants_at_orphan = self.grants()
            self.upstream_at_orphan = self.authorized()
        gone = self.sandbox_id not in self.stack.driver.sandbox_ids()
        if gone and self._log_file is not None:
            self.log += self._log_file.read().decode(errors="replace")
            self._log_file.close()
            self._log_file = None
        return gone


async def test_a_supervisor_that_cannot_renew_its_token_tears_the_sandbox_down(
    stack: Stack,
) -> None:
    stack.issuer.behave(Behaviour.grant(expires_in=1))
    stack.gw.ok("profile", "import", "-f", stack.gw.write("alpha.yaml", stack.profile()))
    stack.gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    orchestrator = stack.server.gateway.orchestrator
    watched: dict[str, Watched] = {}
    with running_front(stack.server.url) as away, running_front(stack.server.url) as refusing:
        for name, front in (("away", away), ("refused", refusing)):
            orchestrator.gateway_url = front.url
            probe = f"curl -s -o /dev/null {stack.alpha_url}/{name}-probe"
            agent = f"while :; do {probe}; sleep 0.2; done"
            created = await asyncio.to_thread(
                stack.gw.json, "sandbox", "create", "--name", name, "--provider", "pa",
                "--", "sh", "-c", agent,
            )  # fmt: skip
            watched[name] = Watched(stack, str(created["id"]), f"/{name}-probe")
        await until(
            lambda: all(item.authorized() > 0 for item in watched.values()),
            30,
            "a token-bearing request from each agent",
        )
        assert all(item.grants() > 0 for item in watched.values())

        away.go_away()  # the gateway is unreachable for this sandbox from now on
        refusing.refuse("POST", "/token", 403)  # this one may heartbeat but never renew

        await until(
            lambda: all([item.poll() for item in watched.values()]), TTL + 40, "both torn down"
        )

    for name, item in watched.items():
        assert ORPHAN_LINE in item.log, (name, item.log[-2000:])
        assert item.expires_at > 0
        assert item.grants_at_orphan is not None and item.upstream_at_orphan is not None
        # No token was requested in the sandbox's name once its supervisor stopped injecting,
        # and at most the one request in flight then reached the upstream.
        assert item.grants() == item.grants_at_orphan, name
        assert item.authorized() - item.upstream_at_orphan <= 1, name
        assert not item.directory.exists()
        assert item.sandbox_id not in stack.agent.workloads()
    assert EXPIRED in watched["away"].log
    # The refused one heartbeated all along; its token ran out, and that is what it said
    # (or the gateway's 401 for the expired token came first).
    assert EXPIRED in watched["refused"].log or "gateway answered 401" in watched["refused"].log
    assert 403 in refusing.answered("POST", "/token")
    for name in watched:
        view = stack.gw.json("sandbox", "get", name)
        assert "torn down" in view["phase_reason"], view
