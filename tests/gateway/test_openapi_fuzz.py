"""Schemathesis against the published OpenAPI document of a live gateway: no 5xx.

Bounded: the fuzzing phase only, a handful of examples per operation, a fixed seed.
Supervisor routes are fuzzed with a real supervisor token for an existing sandbox, operator
routes with the operator token.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grantbox.gateway import GatewayServer
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import GatewayCli, gateway_settings, grant_profile, serving

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def _fuzz(url: str, token: str, *selection: str, config: Path | None = None) -> str:
    command = [str(SCHEMATHESIS)]
    if config is not None:
        command += ["--config-file", str(config)]
    command += [
        "run",
        f"{url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--phases",
        "fuzzing",
        "--max-examples",
        "4",
        "--seed",
        "7",
        "--request-timeout",
        "15",
        "--no-color",
        "-H",
        f"Authorization: Bearer {token}",
        *selection,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed")
def test_no_server_errors(tmp_path: Path) -> None:
    driver = RecordingDriver()
    settings = gateway_settings(tmp_path, longpoll_max=1.0)
    with serving(settings, driver) as server:
        _seed(server, tmp_path)
        spec = driver.created[0]
        config = tmp_path / "schemathesis.toml"
        config.write_text(f'[parameters]\n"path.sandbox_id" = "{spec.sandbox_id}"\n')
        supervisor = _fuzz(
            server.url,
            spec.supervisor_token,
            "--include-path-regex",
            "/supervisor/",
            config=config,
        )
        assert " passed" in supervisor
        operator = _fuzz(server.url, server.operator_token, "--exclude-path-regex", "/supervisor/")
        assert " passed" in operator


def _seed(server: GatewayServer, tmp_path: Path) -> None:
    gw = GatewayCli(server.url, server.operator_token, tmp_path)
    gw.ok("profile", "import", "-f", gw.write("a.yaml", grant_profile("alpha")))
    gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    gw.ok("sandbox", "create", "--name", "box", "--provider", "pa")
