"""How the CLI finds the gateway and its token: flags, environment, then the config dir."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from grantbox.cli import cli
from grantbox.gateway import GatewayServer


def _run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_the_recorded_gateway_and_token_are_used(server: GatewayServer, tmp_path: Path) -> None:
    server.write_client_config()
    recorded = json.loads(server.settings.gateway_file_path.read_text())
    assert recorded["url"] == server.url
    env = {
        "GRANTBOX_CONFIG_DIR": str(server.settings.config_dir),
        "GRANTBOX_GATEWAY": "",
        "GRANTBOX_TOKEN": "",
    }
    code, out, _ = _run(env, "profile", "list", "-o", "json")
    assert code == 0
    assert [p["id"] for p in json.loads(out)] == ["github"]


def test_flags_and_environment_win_over_the_recorded_gateway(
    server: GatewayServer, tmp_path: Path
) -> None:
    server.write_client_config()
    env = {
        "GRANTBOX_CONFIG_DIR": str(server.settings.config_dir),
        "GRANTBOX_GATEWAY": "http://127.0.0.1:9",
        "GRANTBOX_TOKEN": "",
    }
    code, _, err = _run(env, "profile", "list")
    assert code == 1
    assert "cannot reach the gateway at http://127.0.0.1:9" in err
    code, _, _ = _run(env, "profile", "list", "--gateway", server.url)
    assert code == 0
    code, _, err = _run(
        env | {"GRANTBOX_TOKEN": "wrong"}, "profile", "list", "--gateway", server.url
    )
    assert "invalid operator token" in err


def test_nothing_configured_says_what_to_do(tmp_path: Path) -> None:
    env = {"GRANTBOX_CONFIG_DIR": str(tmp_path), "GRANTBOX_GATEWAY": "", "GRANTBOX_TOKEN": ""}
    code, _, err = _run(env, "sandbox", "list")
    assert code == 1
    assert err.startswith(
        "error: no gateway configured: pass --gateway URL or set GRANTBOX_GATEWAY"
    )
