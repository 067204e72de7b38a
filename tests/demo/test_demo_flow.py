"""The demo's operator steps end to end on real parts: gateway, identity agent, local
driver and supervisor (tests.support.sandbox_stack), the demo workloads as processes, and
the ``grantbox`` command line as child processes. A sandboxed ``curl`` must reach alpha and
beta with tokens minted from the sandbox's own SPIFFE identity."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from grantbox.demo import (
    DemoPorts,
    IdentitySettings,
    Operator,
    find_example_dir,
    running_workloads,
)
from grantbox.demo.flow import DemoFlow, DemoOutcome, ProbePolicy
from grantbox.demo.report import Reporter

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root here"),
]


def profile_for(ports: DemoPorts, issuer_url: str, directory: Path) -> Path:
    """The demo profile with the ports the test's workloads got."""
    profile: dict[str, Any] = yaml.safe_load(
        (find_example_dir() / "provider-profile.yaml").read_text()
    )
    grant = profile["credentials"][0]["token_grant"]
    grant["token_endpoint"] = f"{issuer_url}/token"
    grant["jwt_svid_audience"] = issuer_url
    for endpoint in profile["endpoints"]:
        endpoint["port"] = ports.of(endpoint["host"].split(".")[0])
    path = directory / "provider-profile.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Any]:
    from tests.support.sandbox_stack import running_stack

    async with running_stack(tmp_path) as running:
        yield running


async def test_sandboxed_curl_reaches_alpha_and_beta_with_its_own_identity(
    stack: Any, tmp_path: Path
) -> None:
    from tests.support.sandbox_stack import TRUST_DOMAIN

    identity = IdentitySettings(oidc_url=stack.agent.oidc_url, trust_domain=TRUST_DOMAIN)
    console = Console(record=True, width=160)
    operator = Operator(
        {
            "GRANTBOX_GATEWAY": stack.gw.url,
            "GRANTBOX_TOKEN": stack.gw.token,
            "GRANTBOX_CONFIG_DIR": str(tmp_path / "cli-config"),
        }
    )

    def run() -> DemoOutcome:
        with running_workloads(identity, tmp_path / "logs", ports=DemoPorts.any()) as workloads:
            ports = DemoPorts(
                issuer=0,
                alpha=int(workloads.alpha.url.rsplit(":", 1)[1]),
                beta=int(workloads.beta.url.rsplit(":", 1)[1]),
            )
            flow = DemoFlow(
                operator,
                workloads,
                identity,
                profile_for(ports, workloads.issuer_url, tmp_path),
                Reporter(console),
                ports=ports,
                probe=ProbePolicy(attempts=10, interval=1.0),
            )
            try:
                return flow.run()
            finally:
                flow.cleanup()

    outcome = await asyncio.to_thread(run)
    failed = [c for c in outcome.checks if not c.ok]
    assert outcome.ok, (failed, console.export_text())
    assert outcome.spiffe_id.startswith(f"spiffe://{TRUST_DOMAIN}/grantbox/sandbox/")
    text = console.export_text()
    assert "alpha: accepted request GET /hello from " + outcome.spiffe_id in text
    assert "beta: accepted request GET /hello from " + outcome.spiffe_id in text
