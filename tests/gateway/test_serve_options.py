"""`grantbox gateway serve` takes its settings from flags or the environment, and a bad
database URL is one clear line, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from grantbox.cli import cli


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchdb://x", "unsupported database 'nosuchdb'"),
        ("not a url", "database URL is not a URL"),
    ],
)
def test_a_bad_database_url_from_the_environment_is_one_clear_line(
    tmp_path: Path, url: str, message: str
) -> None:
    env = {
        "GRANTBOX_STATE_DIR": str(tmp_path / "state"),
        "GRANTBOX_CONFIG_DIR": str(tmp_path / "config"),
        "GRANTBOX_DB_URL": url,
    }
    result = CliRunner().invoke(cli, ["gateway", "serve", "--listen", "127.0.0.1:0"], env=env)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_help_names_the_environment_variables() -> None:
    result = CliRunner().invoke(cli, ["gateway", "serve", "--help"])
    for name in ("GRANTBOX_DB_URL", "GRANTBOX_LISTEN", "GRANTBOX_DRIVER", "GRANTBOX_ADVERTISE_URL"):
        assert name in result.output
