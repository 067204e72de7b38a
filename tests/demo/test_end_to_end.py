"""The demo end to end on real parts — gateway, identity agent, local driver and supervisor
(tests.support.sandbox_stack), the demo workloads as processes, every operator step through
the ``grantbox`` command line — and then what must hold around it:

- a second request within the token's lifetime makes no new token request (issuer's count);
- an ``Authorization`` header the agent sends is replaced;
- a profile update that changes alpha's scope reaches the running sandbox, no restart;
- detaching the provider: the next request carries no token and alpha answers 401;
- issuer down: the sandbox's curl gets 502 ``token_grant_failed`` /
  ``token_endpoint_unreachable`` and alpha sees no request.

The steps share one sandbox and run in this order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from rich.console import Console

from grantbox.demo import (
    DemoPorts,
    DemoWorkloads,
    HttpProbe,
    IdentitySettings,
    Operator,
    curl_argv,
    find_example_dir,
    parse_curl_output,
    running_workloads,
    service_claims,
)
from grantbox.demo.flow import DemoFlow, DemoNames, DemoOutcome, ProbePolicy, service_url
from grantbox.demo.report import Reporter
from grantbox.demo.run import profile_for_ports

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.timeout(600),  # every step is a real `grantbox` process; the first sets up
    pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root here"),
    pytest.mark.asyncio(loop_scope="module"),
]

NAMES = DemoNames()


def direct_policy(ports: DemoPorts) -> dict[str, Any]:
    """The sandbox's own policy: alpha and beta are reachable even without the provider."""
    endpoints = [
        {"host": f"{s}.localhost", "port": ports.of(s), "allowed_ips": ["127.0.0.1"]}
        for s in ("alpha", "beta")
    ]
    return {"network": [{"name": "demo-services", "endpoints": endpoints}]}


@dataclass
class EndToEnd:
    stack: Any
    workloads: DemoWorkloads
    operator: Operator
    outcome: DemoOutcome
    console: Console
    ports: DemoPorts
    tmp: Path

    def curl(self, service: str, *headers: str) -> HttpProbe:
        argv = curl_argv(service_url(service, self.ports), 10, headers)
        return parse_curl_output(self.operator.exec_in(NAMES.sandbox, argv, 20).stdout)

    def until(
        self, service: str, done: Callable[[HttpProbe], bool], seconds: float = 60
    ) -> HttpProbe:
        deadline = time.monotonic() + seconds
        while True:
            probe = self.curl(service)
            if done(probe) or time.monotonic() > deadline:
                return probe
            time.sleep(0.5)

    def edited_export(self, alpha_scopes: list[str]) -> str:
        """What an operator does: export the profile, change alpha's scopes, save."""
        profile = self.operator.json("profile", "export", NAMES.profile_id)
        assert profile.get("resource_version") is not None
        grant = profile["credentials"][0]["token_grant"]
        for override in grant["audience_overrides"]:
            if override["audience"] == "alpha":
                override["scopes"] = alpha_scopes
        path = self.tmp / "profile-update.yaml"
        path.write_text(yaml.safe_dump(profile, sort_keys=False))
        return str(path)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def e2e(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EndToEnd]:
    from tests.support.sandbox_stack import TRUST_DOMAIN, running_stack

    tmp = tmp_path_factory.mktemp("e2e")
    async with running_stack(tmp) as stack:
        identity = IdentitySettings(oidc_url=stack.agent.oidc_url, trust_domain=TRUST_DOMAIN)
        console = Console(record=True, width=160)
        operator = Operator(
            {
                "GRANTBOX_GATEWAY": stack.gw.url,
                "GRANTBOX_TOKEN": stack.gw.token,
                "GRANTBOX_CONFIG_DIR": str(tmp / "cli-config"),
            }
        )
        with contextlib.ExitStack() as exits:
            workloads = exits.enter_context(
                running_workloads(identity, tmp / "logs", ports=DemoPorts.any())
            )
            ports = DemoPorts(
                issuer=0,
                alpha=int(workloads.alpha.url.rsplit(":", 1)[1]),
                beta=int(workloads.beta.url.rsplit(":", 1)[1]),
            )
            profile = tmp / "provider-profile.yaml"
            original = yaml.safe_load((find_example_dir() / "provider-profile.yaml").read_text())
            moved = profile_for_ports(original, ports, workloads.issuer_url)
            profile.write_text(yaml.safe_dump(moved))
            policy = tmp / "policy.yaml"
            policy.write_text(yaml.safe_dump(direct_policy(ports)))
            flow = DemoFlow(
                operator, workloads, identity, profile, Reporter(console),
                ports=ports, probe=ProbePolicy(attempts=10, interval=1.0), sandbox_policy=policy,
            )  # fmt: skip
            outcome = await asyncio.to_thread(flow.run)
            try:
                yield EndToEnd(stack, workloads, operator, outcome, console, ports, tmp)
            finally:
                await asyncio.to_thread(flow.cleanup)


async def test_the_demo_flow_passes_every_check(e2e: EndToEnd) -> None:
    failed = [check for check in e2e.outcome.checks if not check.ok]
    assert e2e.outcome.ok, (failed, e2e.console.export_text())
    text = e2e.console.export_text()
    for service in ("alpha", "beta"):
        assert f"{service}: accepted request GET /hello from {e2e.outcome.spiffe_id}" in text


async def test_second_request_within_the_ttl_makes_no_token_request(e2e: EndToEnd) -> None:
    before = e2e.workloads.issuer_stats()
    probe = await asyncio.to_thread(e2e.curl, "alpha")
    assert probe.status == 200
    assert e2e.workloads.issuer_stats() == before


async def test_authorization_sent_by_the_agent_is_replaced(e2e: EndToEnd) -> None:
    probe = await asyncio.to_thread(e2e.curl, "alpha", "Authorization: Bearer made-up-by-the-agent")
    assert probe.status == 200, probe.body
    assert service_claims(probe.body)["azp"] == e2e.outcome.spiffe_id


async def test_profile_update_reaches_the_running_sandbox(e2e: EndToEnd) -> None:
    pid = e2e.stack.driver.supervisor_pid(e2e.outcome.sandbox_id)
    profile = await asyncio.to_thread(e2e.edited_export, ["alpha", "beta"])
    await asyncio.to_thread(e2e.operator.run, "profile", "update", NAMES.profile_id, "-f", profile)
    probe = await asyncio.to_thread(
        e2e.until, "alpha", lambda p: "beta" in service_claims(p.body).get("scope", "").split()
    )
    assert service_claims(probe.body)["scope"].split() == ["alpha", "beta", "profile", "email"]
    assert e2e.stack.driver.supervisor_pid(e2e.outcome.sandbox_id) == pid


async def test_detached_provider_means_no_token_and_alpha_answers_401(e2e: EndToEnd) -> None:
    await asyncio.to_thread(
        e2e.operator.run, "sandbox", "detach", "--name", NAMES.sandbox, "--provider", NAMES.provider
    )
    probe = await asyncio.to_thread(e2e.until, "alpha", lambda p: p.status != 200)
    assert probe.status == 401, probe.body
    last = e2e.workloads.alpha.log_lines()[-1]
    assert "refused request GET /hello: 401 a bearer token is required" in last


async def test_issuer_down_means_502_and_nothing_reaches_alpha(e2e: EndToEnd) -> None:
    e2e.workloads.issuer.stop()
    await asyncio.to_thread(
        e2e.operator.run, "sandbox", "attach", "--name", NAMES.sandbox, "--provider", NAMES.provider
    )
    lines_before = len(e2e.workloads.alpha.log_lines())

    def attached(probe: HttpProbe) -> bool:
        nonlocal lines_before
        if probe.status == 401:  # not applied yet: the request still went out bare
            lines_before = len(e2e.workloads.alpha.log_lines())
            return False
        return True

    probe = await asyncio.to_thread(e2e.until, "alpha", attached)
    assert probe.status == 502, probe.body
    answer = json.loads(probe.body)
    assert answer["error"] == "token_grant_failed"
    assert answer["reason"] == "token_endpoint_unreachable"
    assert len(e2e.workloads.alpha.log_lines()) == lines_before
