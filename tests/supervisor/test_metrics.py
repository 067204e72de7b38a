"""A sandbox's metrics are reachable: ``supervisor run --metrics-listen HOST:PORT`` serves the
registry its proxy and grant engine share (scraped for real over HTTP)."""

from __future__ import annotations

from pathlib import Path

import httpx
from click.testing import CliRunner

from grantbox.cli.app import cli
from grantbox.proxy import EgressProxy
from grantbox.supervisor.launch import SupervisorOptions
from grantbox.supervisor.runtime import Supervisor
from tests.support.proxy_harness import RecordingTokens, make_config


async def test_the_supervisor_serves_its_proxys_and_engines_metrics(tmp_path: Path) -> None:
    token = tmp_path / "state" / "supervisor-token"
    token.parent.mkdir()
    token.write_text("not-a-real-token\n")
    options = SupervisorOptions(
        gateway_url="http://127.0.0.1:9",
        sandbox_id="s1",
        token_file=token,
        identity_socket=f"unix://{tmp_path}/sockets/agent.sock",
        metrics_listen=("127.0.0.1", 0),
    )
    supervisor = Supervisor(options)
    # the proxy registers on the supervisor's registry as _run does
    proxy = EgressProxy(
        make_config(), RecordingTokens(), events=lambda e: None, registry=supervisor.registry
    )
    try:
        address = supervisor.serve_metrics()
        assert address is not None and address[1] > 0
        async with httpx.AsyncClient(trust_env=False) as client:
            scraped = (await client.get(f"http://127.0.0.1:{address[1]}/metrics")).text
    finally:
        await proxy.stop()
        await supervisor._shutdown()
    assert "grantbox_proxy_active_connections 0.0" in scraped
    assert "grantbox_token_cache_entries 0.0" in scraped
    assert "not-a-real-token" not in scraped


def test_the_option_is_on_the_command_line() -> None:
    shown = CliRunner().invoke(cli, ["supervisor", "run", "--help"]).output
    assert "--metrics-listen" in shown
