"""``grantbox proxy run``: config validation, and the standalone proxy as a real process
injecting tokens from the real identity agent and token endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from grantbox.cli.app import cli
from grantbox.identity_agent import IdentityAgent
from grantbox.proxy.standalone import StandaloneConfigError, load_standalone_config
from tests.support.proxy_clients import curl
from tests.support.proxy_upstream import RecordingUpstream
from tests.support.token_endpoint import TokenEndpoint, running_token_endpoint

REPO = Path(__file__).resolve().parents[2]
GRANTBOX = Path(sys.executable).parent / "grantbox"


def _profile(token_endpoint: str, host: str, port: int) -> dict[str, object]:
    return {
        "id": "alpha-api",
        "credentials": [
            {
                "name": "token",
                "required": True,
                "token_grant": {
                    "token_endpoint": token_endpoint,
                    "client_assertion_type": (
                        "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
                    ),
                    "audience": "alpha",
                },
            }
        ],
        "endpoints": [{"host": host, "port": port, "allowed_ips": ["127.0.0.1"]}],
    }


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_example_config_is_valid() -> None:
    config = load_standalone_config(REPO / "examples/standalone-proxy/proxy.yaml")
    assert [b.id for b in config.bindings] == [
        "metrics:token@metrics.example.com:443/**",
        "orders:access_token@orders.example.com:443/**",
        "orders:access_token@orders.example.com:443/v1/admin/**",
    ]
    assert {name for name, _ in config.endpoints()} >= {"package-mirror", "_provider_orders"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"profiles": [], "extra": 1}, "unknown keys: extra"),
        ({"providers": [{"name": "a", "profile": "missing"}]}, "no profile with id 'missing'"),
        ({"providers": [{"name": "a"}]}, "expected exactly the keys name and profile"),
        (
            {"policy": {"network": [{"name": "x", "endpoints": [{"host": "a..b", "port": 1}]}]}},
            "policy.network[x].endpoints[0].host",
        ),
        (
            {"policy": {"network": [{"name": "x", "endpoints": [{"host": "a", "port": 0}]}]}},
            "policy.network.0.endpoints.0.port",
        ),
        ({"profiles": [{"id": "Bad Id"}]}, "kebab-case"),
        ({"profiles": ["./does-not-exist.yaml"]}, "does-not-exist.yaml"),
        (
            {
                "profiles": [_profile("https://sso.example.com/token", "api.example.com", 443)],
                "providers": [
                    {"name": "one", "profile": "alpha-api"},
                    {"name": "two", "profile": "alpha-api"},
                ],
            },
            "ambiguous",
        ),
        (
            {"profiles": [_profile("http://sso.example.com/token", "api.example.com", 443)]},
            "token_endpoint",
        ),
    ],
)
def test_invalid_configs_exit_2_with_the_reason(
    document: dict[str, object], message: str, tmp_path: Path
) -> None:
    path = _write(tmp_path / "proxy.yaml", document)
    with pytest.raises(StandaloneConfigError) as info:
        load_standalone_config(path)
    assert any(message in problem for problem in info.value.problems), info.value.problems
    result = CliRunner().invoke(cli, ["proxy", "run", "--config", str(path)])
    assert result.exit_code == 2
    assert "invalid proxy config" in result.output and message in result.output


def test_bad_listen_and_resolve_values_are_usage_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "proxy.yaml", {})
    bad_listen = CliRunner().invoke(cli, ["proxy", "run", "--config", str(path), "--listen", "x"])
    assert bad_listen.exit_code == 2 and "HOST:PORT" in bad_listen.output
    bad_resolve = CliRunner().invoke(
        cli, ["proxy", "run", "--config", str(path), "--resolve", "nothing"]
    )
    assert bad_resolve.exit_code == 2 and "HOST=IP" in bad_resolve.output


@pytest.fixture
async def agent() -> AsyncIterator[IdentityAgent]:
    with tempfile.TemporaryDirectory(prefix="gbx-pc-") as short:
        running = IdentityAgent(
            socket_dir=Path(short) / "sockets",
            state_dir=Path(short) / "state",
            trust_domain="example.org",
            oidc_listen=("127.0.0.1", 0),
        )
        async with running:
            yield running


@pytest.fixture
async def issuer(agent: IdentityAgent) -> AsyncIterator[TokenEndpoint]:
    assert agent.oidc_url is not None
    async with running_token_endpoint(oidc_url=agent.oidc_url, trust_domain="example.org") as ep:
        yield ep


@contextlib.asynccontextmanager
async def standalone(*args: str, status: int = 0) -> AsyncIterator[tuple[int, list[bytes], str]]:
    """Run the command; yields its port, (after it stopped) its stdout lines, and its
    metrics URL (when asked for). It must end with ``status``."""
    process = await asyncio.create_subprocess_exec(
        str(GRANTBOX),
        "proxy",
        "run",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None and process.stdout is not None
    stdout = asyncio.create_task(process.stdout.read())
    lines: list[bytes] = []
    try:
        port = 0
        while not port:
            line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
            assert line, "proxy exited before listening"
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else 0
        metrics = re.search(r"metrics on (http://\S+)", line)
        drain = asyncio.create_task(process.stderr.read())
        yield port, lines, metrics.group(1) if metrics else ""
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == status
        lines.extend((await asyncio.wait_for(stdout, 5)).splitlines())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(drain, 5)


@pytest.mark.parametrize("workers", [1, 2])
async def test_standalone_proxy_injects_tokens_from_the_workload_identity(
    workers: int,
    agent: IdentityAgent,
    issuer: TokenEndpoint,
    tls_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
) -> None:
    workload = agent.add_workload("standalone", "/grantbox/standalone")
    profile_file = _write(
        tmp_path / "alpha.yaml", _profile(issuer.token_url, "alpha.test", tls_upstream.port)
    )
    config = _write(
        tmp_path / "proxy.yaml",
        {
            "profiles": ["./alpha.yaml"],
            "providers": [{"name": "alpha", "profile": "alpha-api"}],
            "policy": {
                "network": [{"name": "other", "endpoints": [{"host": "b.test", "port": 1}]}]
            },
        },
    )
    assert profile_file.exists()
    ca_out = tmp_path / "ca.pem"
    async with standalone(
        "--config",
        str(config),
        "--listen",
        "127.0.0.1:0",
        "--identity-socket",
        f"unix:{workload}",
        "--ca-out",
        str(ca_out),
        "--upstream-ca",
        str(upstream_ca_file),
        "--resolve",
        "alpha.test=127.0.0.1",
        "--metrics-listen",
        "127.0.0.1:0",
        "--workers",
        str(workers),
    ) as (port, events, metrics_url):
        proxy = f"http://127.0.0.1:{port}"
        ok = await curl(
            f"https://alpha.test:{tls_upstream.port}/orders", proxy=proxy, cacert=ca_out
        )
        denied = await curl("http://c.test/", proxy=proxy)
        async with httpx.AsyncClient(trust_env=False) as client:
            # Workers report their counts once a second: wait until all three are in.
            for _ in range(100):
                scraped = (await client.get(metrics_url)).text
                if 'decision="denied"} 1.0' in scraped and 'decision="allowed"} 2.0' in scraped:
                    break
                await asyncio.sleep(0.1)
    assert ok.status == 200, ok.stderr
    (token,) = issuer.issued
    assert tls_upstream.requests[0].header("authorization") == [f"Bearer {token}"]
    assert denied.status == 403 and denied.json()["error"] == "policy_denied"
    decoded = [json.loads(line) for line in events]
    assert {e["class_uid"] for e in decoded} == {4002}  # HTTP Activity: one per request
    assert any(e.get("unmapped", {}).get("injection") == "injected" for e in decoded)
    assert all(token.encode() not in line for line in events)
    # the proxy's and the grant engine's metrics, scraped from the running process
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in scraped.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['grantbox_proxy_requests_total{code="",decision="allowed"}'] == 2.0
    assert samples['grantbox_proxy_requests_total{code="policy_denied",decision="denied"}'] == 1.0
    assert samples['grantbox_token_grants_total{outcome="success",reason=""}'] == 1.0
    assert samples['grantbox_proxy_injections_total{outcome="injected"}'] == 1.0
    assert samples["grantbox_proxy_events_dropped_total"] == 0.0
    assert token not in scraped


async def test_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    """A parent killed without a chance to stop them: its workers see the channel close
    and exit on their own (nothing keeps serving without the parent's policy updates)."""
    config = _write(tmp_path / "proxy.yaml", {})
    async with standalone(
        "--config", str(config), "--listen", "127.0.0.1:0", "--workers", "2", status=-9
    ) as (
        port,
        _events,
        _metrics,
    ):
        parent = _listener_pid(port)
        workers = _children_running("grantbox.proxy.pool.worker", parent)
        assert len(workers) == 2
        os.kill(parent, signal.SIGKILL)
        for _ in range(100):
            if not any(Path(f"/proc/{pid}").exists() for pid in workers):
                break
            await asyncio.sleep(0.1)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def _listener_pid(port: int) -> int:
    """The process listening on ``port`` (the proxy's parent: it holds the listener)."""
    inode = ""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            inode = fields[9]
    assert inode
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return int(pid)
    raise AssertionError("no process holds the listener")


def _children_running(module: str, parent: int) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if module in cmdline and int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(pid))
    return found
