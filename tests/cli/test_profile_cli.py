"""`grantbox profile lint|bindings|schema` as users run them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from grantbox.cli import cli

DEMO = Path(__file__).parents[2] / "examples/spiffe-token-grant-demo/provider-profile.yaml"


def _profile(**grant_changes: object) -> dict[str, object]:
    grant: dict[str, object] = {
        "token_endpoint": "https://auth.example.com/token",
        "audience_overrides": [{"host": "api.example.com", "path": "/v1/**", "audience": "v1"}],
    }
    grant.update(grant_changes)
    return {
        "id": "example-api",
        "credentials": [{"name": "tok", "header_name": "Authorization", "token_grant": grant}],
        "endpoints": [{"host": "api.example.com", "port": 443}],
    }


def _write(tmp_path: Path, doc: object, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_demo_profile_lints_clean_through_the_installed_command() -> None:
    exe = shutil.which("grantbox") or str(Path(sys.executable).parent / "grantbox")
    done = subprocess.run(
        [exe, "profile", "lint", "-f", str(DEMO)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "1 profile checked: valid" in done.stdout


BAD = {
    "plain http token endpoint": (
        {"token_endpoint": "http://auth.example.com/token"},
        "credentials[0].token_grant.token_endpoint",
    ),
    "framing header": (None, "credentials[0].header_name"),
    "equal overlapping overrides": (
        {
            "audience_overrides": [
                {"host": "api.example.com", "path": "/v1/**", "audience": "a"},
                {"path": "/v1/**", "audience": "b"},
            ]
        },
        "credentials[0].token_grant.audience_overrides[1]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_lint_exits_1_and_names_the_field(tmp_path: Path, case: str) -> None:
    changes, field = BAD[case]
    doc = _profile(**(changes or {}))
    if changes is None:
        doc["credentials"][0]["header_name"] = "Transfer-Encoding"  # type: ignore[index]
    path = _write(tmp_path, doc)
    result = CliRunner().invoke(cli, ["profile", "lint", "-f", str(path), "-o", "json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["valid"] is False
    assert field in [d["field"] for d in report["diagnostics"]]
    table = CliRunner().invoke(cli, ["profile", "lint", "-f", str(path)])
    assert table.exit_code == 1
    assert field in table.output


def test_lint_a_directory(tmp_path: Path) -> None:
    _write(tmp_path, _profile(), "a.yaml")
    _write(tmp_path, dict(_profile(), id="other-api"), "b.yaml")
    result = CliRunner().invoke(cli, ["profile", "lint", "--from", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "2 profiles checked: valid" in result.output


def test_lint_without_input_explains_itself() -> None:
    result = CliRunner().invoke(cli, ["profile", "lint"])
    assert result.exit_code == 1
    assert "-f FILE" in result.output


def test_bindings_of_the_demo_profile() -> None:
    result = CliRunner().invoke(cli, ["profile", "bindings", "-f", str(DEMO), "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [(b["host"], b["audience"]) for b in data["bindings"]] == [
        ("alpha.localhost", "alpha"),
        ("beta.localhost", "beta"),
    ]
    assert data["collisions"] == []
    table = CliRunner().invoke(cli, ["profile", "bindings", "-f", str(DEMO)])
    assert "alpha.localhost" in table.output and "beta.localhost" in table.output


def test_bindings_report_collisions_between_providers(tmp_path: Path) -> None:
    path = _write(tmp_path, _profile())
    result = CliRunner().invoke(
        cli,
        [
            "profile",
            "bindings",
            "-f",
            str(path),
            "--provider",
            "one=example-api",
            "--provider",
            "two=example-api",
        ],
    )
    assert result.exit_code == 1
    assert "'one:tok' and 'two:tok' are ambiguous" in result.output


def test_bindings_refuse_invalid_profiles(tmp_path: Path) -> None:
    path = _write(tmp_path, _profile(token_endpoint="ftp://x/y"))
    result = CliRunner().invoke(cli, ["profile", "bindings", "-f", str(path)])
    assert result.exit_code == 1
    assert "token_endpoint" in result.output


def test_schema_is_json() -> None:
    result = CliRunner().invoke(cli, ["profile", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "grantbox provider profile"


def test_every_listed_command_loads_and_answers_help() -> None:
    from grantbox.cli.app import COMMANDS

    for name in COMMANDS:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output


def test_top_level_help_lists_commands_without_importing_them() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from grantbox.cli import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'profile' in r.output and 'sandbox' in r.output\n"
        "assert '  supervisor ' not in r.output\n"
        "assert 'grantbox.gateway' not in sys.modules, 'help imported the gateway'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
