"""A real gateway on a free loopback port, and the CLI pointed at it, for tests."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from grantbox.cli import cli
from grantbox.drivers import ComputeDriver
from grantbox.gateway import GatewayServer, GatewaySettings


def gateway_settings(root: Path, db_url: str = "", **overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        state_dir=root / "state",
        config_dir=root / "config",
        db_url=db_url,
        listen="127.0.0.1:0",
        **overrides,
    )


@contextmanager
def serving(
    settings: GatewaySettings, driver: ComputeDriver | None = None
) -> Iterator[GatewayServer]:
    server = GatewayServer(settings, driver)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class GatewayCli:
    """Runs ``grantbox`` in-process (click's runner) against a live gateway."""

    url: str
    token: str
    workdir: Path

    def run(self, *args: str, input: str | None = None) -> Result:
        env = {
            "GRANTBOX_GATEWAY": self.url,
            "GRANTBOX_TOKEN": self.token,
            "GRANTBOX_CONFIG_DIR": str(self.workdir / "cli-config"),
        }
        return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.exit_code == 0, f"{args}: {result.output}{result.stderr}"
        return result

    def json(self, *args: str) -> Any:
        parts = list(args)
        cut = parts.index("--") if "--" in parts else len(parts)
        return json.loads(self.ok(*parts[:cut], "-o", "json", *parts[cut:]).stdout)

    def refused(self, *args: str) -> str:
        """Run a command that must fail; returns its one-line error."""
        result = self.run(*args)
        assert result.exit_code != 0, f"{args} unexpectedly succeeded: {result.stdout}"
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, result.stderr
        return lines[0]

    def write(self, name: str, data: Any) -> str:
        path = self.workdir / name
        if isinstance(data, str):
            path.write_text(data)
        elif isinstance(data, Sequence) and not isinstance(data, dict):
            path.write_text(yaml.safe_dump_all(list(data), sort_keys=False))
        else:
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        return str(path)


def grant_profile(
    profile_id: str,
    host: str = "api.example.com",
    path: str = "",
    port: int = 443,
    audience: str = "",
) -> dict[str, Any]:
    """A minimal token-grant profile binding one endpoint."""
    endpoint: dict[str, Any] = {"host": host, "port": port}
    if path:
        endpoint["path"] = path
    grant: dict[str, Any] = {"token_endpoint": "https://issuer.example.com/oauth2/token"}
    if audience:
        grant["audience"] = audience
    return {
        "id": profile_id,
        "credentials": [
            {"name": "access_token", "required": True, "auth_style": "bearer", "token_grant": grant}
        ],
        "endpoints": [endpoint],
    }
