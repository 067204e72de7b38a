"""``grantbox sandbox``: create, inspect, restart, exec in, watch and delete sandboxes."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from .client import GatewayCallError, GatewayClient, connect, gateway_option, reports_gateway_errors
from .events import event_line, is_connection_churn
from .exec_session import ExecOptions, run_exec
from .naming import CommandAfterDashes, after_dashes, name_options
from .output import emit, fail, output_option, say, to_json, to_yaml, usage_error
from .progress import Progress
from .since import SinceType

_COLUMNS = (
    ("NAME", "name"),
    ("PHASE", "phase"),
    ("PROVIDERS", "providers"),
    ("COMMAND", "command", lambda v: _shorten(" ".join(v or ()) or "(idle)")),
    ("CREATED", "created_at"),
    ("REASON", "phase_reason"),
    ("CONDITIONS", "conditions", lambda v: _conditions(v)),
)
NO_SANDBOXES = "no sandboxes (create one with `grantbox sandbox create NAME -- COMMAND`)"
DEFAULT_TAIL = 1000
WAIT_POLL = 0.25
OMITTED_HEADER = "grantbox-omitted"


def _conditions(conditions: list[dict[str, Any]] | None) -> str:
    """The conditions that hold (``status: True``), each with its message."""
    held = [c for c in conditions or () if c.get("status") == "True"]
    return "; ".join(f"{c.get('type')}: {c.get('message', '')}" for c in held)


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _load_policy(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        fail(f"--policy {path}: cannot read: {' '.join(str(exc).split())}")
    if not isinstance(data, dict):
        fail(f"--policy {path}: expected a mapping with a 'network' list")
    return data


_wait_option = click.option(
    "--wait",
    is_flag=True,
    help="Return once the sandbox is ready (or has already exited); fail if it errs.",
)
_wait_timeout_option = click.option(
    "--wait-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="How long --wait waits.",
)


def wait_until_started(client: GatewayClient, name: str, seconds: float) -> dict[str, Any]:
    """Poll the sandbox until it leaves ``provisioning``; a progress line on stderr."""
    progress = Progress(f"sandbox {name}")
    deadline = time.monotonic() + seconds
    try:
        while True:
            view: dict[str, Any] = client.call("GET", f"/sandboxes/{name}")
            phase, reason = view["phase"], view.get("phase_reason") or ""
            if phase in ("ready", "exited"):
                progress.done(phase)
                return view
            if phase in ("error", "deleting"):
                progress.clear()
                fail(f"sandbox {name} is in phase {phase}: {reason}")
            progress.show(f"{phase}: {reason}" if reason else phase)
            if time.monotonic() > deadline:
                progress.clear()
                fail(
                    f"sandbox {name} is still {phase} after {seconds:g} s ({reason}); "
                    f"see `grantbox sandbox logs {name}`"
                )
            time.sleep(WAIT_POLL)
    except KeyboardInterrupt:
        progress.done("interrupted")
        raise SystemExit(130) from None


@click.group()
def sandbox() -> None:
    """Sandboxes: a command whose only exit is the egress proxy."""


@sandbox.command("create", cls=CommandAfterDashes)
@name_options("sandbox")
@click.option("--provider", "providers", multiple=True, help="Attach a provider. Repeatable.")
@click.option(
    "--policy",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Network policy file (YAML/JSON: network: [{name, endpoints: [...]}]).",
)
@_wait_option
@_wait_timeout_option
@gateway_option
@output_option
@reports_gateway_errors
def create(
    name: str,
    providers: tuple[str, ...],
    policy: Path | None,
    wait: bool,
    wait_timeout: float,
    gateway: str | None,
    fmt: str,
) -> None:
    """Create a sandbox; the command after -- is what it runs (default: stay idle, for
    exec).

    \b
    Example:
      grantbox sandbox create agent --provider demo --wait -- sleep infinity
    """
    body = {
        "name": name,
        "providers": list(providers),
        "policy": _load_policy(policy) if policy else None,
        "command": list(after_dashes()),
    }
    with connect(gateway) as client:
        view = client.call("POST", "/sandboxes", body=body)
        if wait:
            view = wait_until_started(client, name, wait_timeout)
    emit(view, fmt, _COLUMNS)


@sandbox.command("list")
@gateway_option
@output_option
@reports_gateway_errors
def list_(gateway: str | None, fmt: str) -> None:
    """List sandboxes and their phases."""
    with connect(gateway) as client:
        emit(client.call("GET", "/sandboxes"), fmt, _COLUMNS, empty=NO_SANDBOXES)


@sandbox.command("get")
@name_options("sandbox")
@gateway_option
@output_option
@reports_gateway_errors
def get(name: str, gateway: str | None, fmt: str) -> None:
    """Show one sandbox."""
    with connect(gateway) as client:
        emit(client.call("GET", f"/sandboxes/{name}"), fmt, _COLUMNS)


@sandbox.command("config")
@name_options("sandbox")
@gateway_option
@click.option("-o", "--output", "fmt", type=click.Choice(("json", "yaml")), default="yaml")
@reports_gateway_errors
def config(name: str, gateway: str | None, fmt: str) -> None:
    """Show the effective config the sandbox's supervisor enforces."""
    with connect(gateway) as client:
        emit(client.call("GET", f"/sandboxes/{name}/config"), fmt)


@sandbox.command("delete")
@name_options("sandbox")
@gateway_option
@reports_gateway_errors
def delete(name: str, gateway: str | None) -> None:
    """Stop and delete a sandbox."""
    with connect(gateway, timeout=120.0) as client:
        client.call("DELETE", f"/sandboxes/{name}")
    say(f"sandbox {name} deleted")


@sandbox.command("restart")
@name_options("sandbox")
@_wait_option
@_wait_timeout_option
@gateway_option
@output_option
@reports_gateway_errors
def restart(name: str, wait: bool, wait_timeout: float, gateway: str | None, fmt: str) -> None:
    """Stop the sandbox (if anything still runs) and start its command again."""
    with connect(gateway, timeout=120.0) as client:
        view = client.call("POST", f"/sandboxes/{name}/restart")
        if wait:
            view = wait_until_started(client, name, wait_timeout)
    emit(view, fmt, _COLUMNS)


@sandbox.command("attach")
@name_options("sandbox")
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
@name_options("sandbox")
@click.option("--provider", required=True, help="Provider to detach.")
@gateway_option
@output_option
@reports_gateway_errors
def detach(name: str, provider: str, gateway: str | None, fmt: str) -> None:
    """Detach a provider; its endpoints and grants leave the sandbox's config."""
    with connect(gateway) as client:
        emit(client.call("DELETE", f"/sandboxes/{name}/providers/{provider}"), fmt, _COLUMNS)


# -- logs and events ----------------------------------------------------------------------------

_tail_option = click.option(
    "--tail",
    type=click.IntRange(min=-1),
    default=None,
    metavar="N",
    help=f"Only the newest N entries (default {DEFAULT_TAIL}; -1: all the gateway keeps).",
)
_since_option = click.option(
    "--since",
    type=SinceType(),
    default=None,
    help="Only entries at or after this RFC 3339 time, or this long ago (30s, 5m, 2h, 1d).",
)
_follow_option = click.option(
    "-f", "--follow", is_flag=True, help="Keep streaming new entries until Ctrl-C."
)
_records_output = click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(("table", "json", "yaml")),
    default="table",
    show_default=True,
    help="table: one line per entry; json: one JSON object per line; yaml: a list.",
)


def _params(tail: int | None, since: str | None, follow: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"follow": "true" if follow else "false"}
    if tail is None:
        tail = DEFAULT_TAIL
    if tail >= 0:
        params["tail"] = tail
    if since:
        params["since"] = since
    return params


def _follow_records(
    name: str,
    kind: str,
    params: dict[str, Any],
    gateway: str | None,
    fmt: str,
    show: Any,
) -> None:
    """Stream logs or events and print each as it arrives; says on stderr what a tail
    left out, so the JSON on stdout stays clean. A follow stream the gateway ends with
    ``next_after`` is picked up again from there."""
    if fmt == "yaml" and params["follow"] == "true":
        usage_error("--follow prints entry by entry: use -o table or -o json")
    collected: list[dict[str, Any]] = []
    first = True
    try:
        with connect(gateway) as client:
            while True:
                resume_at = None
                with client.stream(
                    "GET", f"/sandboxes/{name}/{kind}", params=params, read_timeout=None
                ) as stream:
                    if first:
                        _say_omitted(kind, params, stream.headers)
                        first = False
                    for item in stream.items:
                        if "next_after" in item:
                            resume_at = int(item["next_after"])
                        elif fmt == "yaml":
                            collected.append(item)
                        elif fmt == "json":
                            click.echo(to_json(item, indent=None))
                        else:
                            show(item)
                if resume_at is None:
                    break
                params = {**params, "after": resume_at}
                params.pop("tail", None)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if fmt == "yaml":
        click.echo(to_yaml(collected))


def _say_omitted(kind: str, params: dict[str, Any], headers: Any) -> None:
    omitted = int(headers.get(OMITTED_HEADER, "0") or 0)
    if omitted:
        noun = "lines" if kind == "logs" else "events"
        say(
            f"note: {omitted} older {noun} left out; showing the newest {params.get('tail')} "
            "(--tail N shows more, --tail -1 all that are kept)",
            err=True,
        )


@sandbox.command("logs")
@name_options("sandbox")
@_tail_option
@_since_option
@_follow_option
@click.option(
    "--raw",
    is_flag=True,
    help="Print each line's exact text, nothing added and nothing escaped (for pipes; "
    "control characters reach your terminal as the agent wrote them).",
)
@gateway_option
@_records_output
@reports_gateway_errors
def logs(
    name: str,
    tail: int | None,
    since: str | None,
    follow: bool,
    raw: bool,
    gateway: str | None,
    fmt: str,
) -> None:
    """What the sandbox's command printed (stdout and stderr), oldest first.

    Control characters are shown escaped (\\x1b, \\r): the text is the agent's and must not
    act on your terminal; --raw prints it unmodified.
    """
    out = sys.stdout

    def show(item: dict[str, Any]) -> None:
        message = str(item.get("message", ""))
        if raw:
            out.write(message + "\n")
            out.flush()
        else:
            # The flag is the gateway's, never the agent's text: the mark follows the line.
            cut = " [truncated]" if item.get("truncated") else ""
            say(f"{item.get('time', '')} [{item.get('stream', '')}] {message}{cut}")

    _follow_records(name, "logs", _params(tail, since, follow), gateway, fmt, show)


@sandbox.command("events")
@name_options("sandbox")
@_tail_option
@_since_option
@_follow_option
@gateway_option
@_records_output
@reports_gateway_errors
def events(
    name: str, tail: int | None, since: str | None, follow: bool, gateway: str | None, fmt: str
) -> None:
    """The egress proxy's decisions, one line each: time, decision, method and URL, the
    policy rule or grant binding, and why.

    \b
    Decisions: allow, deny, audit (allowed; would be denied under enforce), token (a token
    was injected), no-token (the token grant failed: see reason), refuse/fail (a
    connection). Connections opening and closing show only in -o json.
    """

    def show(item: dict[str, Any]) -> None:
        if not is_connection_churn(item):
            say(event_line(item))

    _follow_records(name, "events", _params(tail, since, follow), gateway, fmt, show)


# -- exec -------------------------------------------------------------------------------------


@sandbox.command("exec", cls=CommandAfterDashes)
@name_options("sandbox")
@click.option(
    "-i", "--stdin", "interactive", is_flag=True, help="Forward stdin even from a terminal."
)
@click.option("-t", "--tty", is_flag=True, help="Run the command on a terminal (with -i).")
@click.option(
    "--timeout",
    "timeout_seconds",
    type=click.FloatRange(min=0, min_open=True, max=86_400),
    default=None,
    metavar="SECONDS",
    help="Stop the command after this long (default 300; 86400 with -t).",
)
@click.option(
    "--raw",
    is_flag=True,
    help="Pass output to your terminal unescaped (pipes and -t always get it unchanged).",
)
@gateway_option
def exec_(
    name: str,
    interactive: bool,
    tty: bool,
    timeout_seconds: float | None,
    raw: bool,
    gateway: str | None,
) -> None:
    """Run a command in the sandbox; exits with the command's exit status.

    Piped stdin is forwarded; from a terminal, give -i (and -t for a shell). Output into
    a pipe is byte for byte; onto a terminal its control characters are shown escaped
    unless -t or --raw (an interactive shell, like ssh, passes them through).

    \b
    Examples:
      grantbox sandbox exec agent -- curl -s http://alpha.localhost:18081/hello
      echo hi | grantbox sandbox exec agent -- cat
      grantbox sandbox exec -it agent -- sh
    """
    command = after_dashes()
    if not command:
        usage_error(f"give the command after --: grantbox sandbox exec {name} -- COMMAND...")
    options = ExecOptions.decide(
        command=command,
        interactive=interactive,
        tty=tty,
        timeout=timeout_seconds,
        raw=raw,
    )
    try:
        code = run_exec(connect(gateway, timeout=60.0), name, options)
    except GatewayCallError as exc:
        fail(str(exc))
    raise SystemExit(code)
