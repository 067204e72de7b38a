"""Gateway settings come from GRANTBOX_* variables through one pydantic-settings model; the
command line wins; a bad value stops start-up with one line naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from grantbox.cli import cli
from grantbox.gateway.settings import GatewaySettings, default_config_dir, default_state_dir

SECRET_URL = "postgresql://grantbox:s3cret-pw@db.example/grantbox"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("GRANTBOX_"):
            monkeypatch.delenv(key)


def test_every_setting_comes_from_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {
        "GRANTBOX_STATE_DIR": str(tmp_path / "s"),
        "GRANTBOX_CONFIG_DIR": str(tmp_path / "c"),
        "GRANTBOX_DB_URL": SECRET_URL,
        "GRANTBOX_LISTEN": "[::1]:9000",
        "GRANTBOX_TOKEN_AUDIENCE": "aud",
        "GRANTBOX_SUPERVISOR_TOKEN_TTL": "600",
        "GRANTBOX_HEARTBEAT_STALE_AFTER": "12.5",
        "GRANTBOX_LONGPOLL_MAX": "20",
        "GRANTBOX_ADVERTISE_URL": "http://grantbox.ns.svc:7443",
        "GRANTBOX_MAX_BODY_BYTES": "1048576",
        "GRANTBOX_PROXY_WORKERS": "4",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings = GatewaySettings.from_env()
    assert settings.state_dir == tmp_path / "s" and settings.config_dir == tmp_path / "c"
    assert settings.database_url == SECRET_URL
    assert settings.listen == "[::1]:9000" and settings.token_audience == "aud"
    assert settings.supervisor_token_ttl == 600 and settings.heartbeat_stale_after == 12.5
    assert settings.longpoll_max == 20 and settings.max_body_bytes == 1048576
    assert settings.advertise_url == "http://grantbox.ns.svc:7443"
    assert settings.proxy_workers == 4
    assert default_state_dir() == tmp_path / "s" and default_config_dir() == tmp_path / "c"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


def test_the_command_line_wins_and_empty_means_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GRANTBOX_LISTEN", "127.0.0.1:1")
    monkeypatch.setenv("GRANTBOX_STATE_DIR", "")
    monkeypatch.setenv("GRANTBOX_PROXY_WORKERS", "3")
    settings = GatewaySettings.from_env(listen="127.0.0.1:2", db_url=None, state_dir=None)
    assert settings.listen == "127.0.0.1:2"
    assert settings.proxy_workers == 3  # `grantbox up` without --proxy-workers
    assert GatewaySettings.from_env(proxy_workers=2).proxy_workers == 2
    assert settings.state_dir.name == "grantbox" and settings.state_dir.is_absolute()
    assert settings.database_url == f"sqlite:///{settings.state_dir / 'gateway.db'}"


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("GRANTBOX_SUPERVISOR_TOKEN_TTL", "abc", "valid integer"),
        ("GRANTBOX_SUPERVISOR_TOKEN_TTL", "5", "greater than or equal to 60"),
        ("GRANTBOX_HEARTBEAT_STALE_AFTER", "-1", "greater than 0"),
        ("GRANTBOX_LISTEN", "localhost", "must be HOST:PORT"),
        ("GRANTBOX_LISTEN", "127.0.0.1:70000", "outside 0-65535"),
        ("GRANTBOX_ADVERTISE_URL", "grantbox:7443", "http:// or https://"),
        ("GRANTBOX_MAX_BODY_BYTES", "10", "greater than or equal to 65536"),
        ("GRANTBOX_PROXY_WORKERS", "0", "greater than or equal to 1"),
        ("GRANTBOX_PROXY_WORKERS", "65", "less than or equal to 64"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"invalid setting {variable}: .*{reason}"):
        GatewaySettings.from_env()


def test_gateway_serve_refuses_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    env = {
        "GRANTBOX_STATE_DIR": str(tmp_path / "state"),
        "GRANTBOX_CONFIG_DIR": str(tmp_path / "config"),
        "GRANTBOX_SUPERVISOR_TOKEN_TTL": "soon",
        "GRANTBOX_DB_URL": SECRET_URL,
    }
    result = CliRunner().invoke(cli, ["gateway", "serve", "--listen", "127.0.0.1:0"], env=env)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: cannot start the gateway: invalid setting GRANTBOX_SUPERVISOR_TOKEN_TTL: "
        "Input should be a valid integer, unable to parse string as an integer"
    ]
    assert "s3cret" not in result.output
    assert not (tmp_path / "state").exists()  # nothing was created
