"""``grantbox sandbox``: create, inspect, attach providers to, exec in and delete sandboxes."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml
from rich.markup import escape

from .client import GatewayCallError, connect, gateway_option, reports_gateway_errors
from .output import emit, fail, output_option


def _conditions(conditions: list[dict[str, Any]] | None) -> str:
    """The conditions that hold (``status: True``), each with its message."""
    held = [c for c in conditions or () if c.get("status") == "True"]
    return "; ".join(escape(f"{c.get('type')}: {c.get('message', '')}") for c in held)


_COLUMNS = (
    ("NAME", "name"),
    ("PHASE", "phase"),
    ("PROVIDERS", "providers"),
    ("REVISION", "revision", lambda v: str(v or "")[7:19]),
    ("REASON", "phase_reason"),
    ("CONDITIONS", "conditions", _conditions),
    ("ID", "id"),
)


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _load_policy(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        fail(f"--policy {path}: cannot read: {' '.join(str(exc).split())}")
    if not isinstance(data, dict):
        fail(f"--policy {path}: expected a mapping with a 'network' list")
    return data


@click.group()
def sandbox() -> None:
    """Sandboxes: a command whose only exit is the egress proxy."""


@sandbox.command("create")
@click.option("--name", required=True, help="Sandbox name (a DNS label).")
@click.option("--provider", "providers", multiple=True, help="Attach a provider. Repeatable.")
@click.option(
    "--policy",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Network policy file (YAML/JSON: network: [{name, endpoints: [...]}]).",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@gateway_option
@output_option
@reports_gateway_errors
def create(
    name: str,
    providers: tuple[str, ...],
    policy: Path | None,
    command: tuple[str, ...],
    gateway: str | None,
    fmt: str,
) -> None:
    """Create a sandbox; the command after ``--`` is what it runs.

    \b
    Example:
      grantbox sandbox create --name agent --provider demo -- sleep infinity
    """
    body = {
        "name": name,
        "providers": list(providers),
        "policy": _load_policy(policy) if policy else None,
        "command": list(command),
    }
    with connect(gateway) as client:
        emit(client.call("POST", "/sandboxes", body=body), fmt, _COLUMNS)


@sandbox.command("list")
@gateway_option
@output_option
@reports_gateway_errors
def list_(gateway: str | None, fmt: str) -> None:
    """List sandboxes and their phases."""
    with connect(gateway) as client:
        emit(client.call("GET", "/sandboxes"), fmt, _COLUMNS)


@sandbox.command("get")
@click.argument("name")
@gateway_option
@output_option
@reports_gateway_errors
def get(name: str, gateway: str | None, fmt: str) -> None:
    """Show one sandbox."""
    with connect(gateway) as client:
        emit(client.call("GET", f"/sandboxes/{name}"), fmt, _COLUMNS)


@sandbox.command("config")
@click.argument("name")
@gateway_option
@click.option("-o", "--output", "fmt", type=click.Choice(("json", "yaml")), default="yaml")
@reports_gateway_errors
def config(name: str, gateway: str | None, fmt: str) -> None:
    """Show the effective config the sandbox's supervisor enforces."""
    with connect(gateway) as client:
        emit(client.call("GET", f"/sandboxes/{name}/config"), fmt)


@sandbox.command("delete")
@click.argument("name")
@gateway_option
@reports_gateway_errors
def delete(name: str, gateway: str | None) -> None:
    """Stop and delete a sandbox."""
    with connect(gateway) as client:
        client.call("DELETE", f"/sandboxes/{name}")
    click.echo(f"sandbox {name} deleted")


@sandbox.command("attach")
@click.option("--name", required=True, help="Sandbox name.")
@click.option("--provider", required=True, help="Provider to attach.")
@gateway_option
@output_option
@reports_gateway_errors
def attach(name: str, provider: str, gateway: str | None, fmt: str) -> None:
    """Attach a provider (refused if it would make grants ambiguous)."""
    with connect(gateway) as client:
        body = {"provider": provider}
        emit(client.call("POST", f"/sandboxes/{name}/providers", body=body), fmt, _COLUMNS)


@sandbox.command("detach")
@click.option("--name", required=True, help="Sandbox name.")
@click.option("--provider", required=True, help="Provider to detach.")
@gateway_option
@output_option
@reports_gateway_errors
def detach(name: str, provider: str, gateway: str | None, fmt: str) -> None:
    """Detach a provider; its endpoints and grants leave the sandbox's config."""
    with connect(gateway) as client:
        emit(client.call("DELETE", f"/sandboxes/{name}/providers/{provider}"), fmt, _COLUMNS)


def _print_log_lines(lines: list[dict[str, Any]], fmt: str) -> None:
    for line in lines:
        if fmt == "json":
            click.echo(json.dumps(line, sort_keys=True))
        else:
            # The flag is the gateway's, not the agent's text: mark the cut after the line.
            cut = " [truncated]" if line.get("truncated") else ""
            click.echo(f"{_clock(line['ts'])} [{line['stream']}] {line['message']}{cut}")


@sandbox.command("logs")
@click.argument("name")
@click.option("--since", type=int, default=0, help="Only lines after this sequence number.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until interrupted.")
@gateway_option
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(("table", "json", "yaml")),
    default="table",
    help="table: one line per entry; json: one JSON object per line; yaml: a list.",
)
@reports_gateway_errors
def logs(name: str, since: int, limit: int, follow: bool, gateway: str | None, fmt: str) -> None:
    """Show what the sandbox's supervisor shipped."""
    if follow and fmt == "yaml":
        fail("--follow prints line by line: use -o table or -o json")
    with connect(gateway) as client:
        while True:
            params = {"since": since, "limit": limit}
            lines = client.call("GET", f"/sandboxes/{name}/logs", params=params)
            if fmt == "yaml":
                emit(lines, fmt)
                return
            _print_log_lines(lines, fmt)
            if lines:
                since = int(lines[-1]["seq"])
            if not follow:
                return
            if len(lines) < limit:
                try:
                    time.sleep(1.0)
                except KeyboardInterrupt:
                    return


_EVENT_COLUMNS = (
    ("TIME", "ts", _clock),
    ("KIND", "kind"),
    ("DATA", "data", lambda v: json.dumps(v, sort_keys=True)),
)


@sandbox.command("events")
@click.argument("name")
@click.option("--since", type=int, default=0, help="Only events after this sequence number.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000)
@gateway_option
@output_option
@reports_gateway_errors
def events(name: str, since: int, limit: int, gateway: str | None, fmt: str) -> None:
    """Show the events (policy decisions, grant failures) the supervisor shipped."""
    with connect(gateway) as client:
        params = {"since": since, "limit": limit}
        emit(client.call("GET", f"/sandboxes/{name}/events", params=params), fmt, _EVENT_COLUMNS)


@sandbox.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--name", required=True, help="Sandbox name.")
@click.option("--timeout", "timeout_seconds", type=float, default=300.0, show_default=True)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@gateway_option
@reports_gateway_errors
def exec_(name: str, timeout_seconds: float, command: tuple[str, ...], gateway: str | None) -> None:
    """Run a command in the sandbox; exits with the command's exit code.

    \b
    Example:
      grantbox sandbox exec --name agent -- curl -s http://alpha.localhost:18081/
    """
    stdout = sys.stdout.buffer
    stderr = sys.stderr.buffer
    body = {"command": list(command), "timeout_seconds": timeout_seconds}
    with connect(gateway) as client:
        for item in client.stream(f"/sandboxes/{name}/exec", body, timeout_seconds + 60):
            if "data" in item:
                target = stderr if item.get("stream") == "stderr" else stdout
                target.write(base64.b64decode(item["data"]))
                target.flush()
            elif "exit_code" in item:
                raise SystemExit(int(item["exit_code"]))
            elif "error" in item:
                fail(f"exec in sandbox '{name}' failed: {item['error']}")
    raise GatewayCallError("the gateway ended the exec stream without an exit code")
