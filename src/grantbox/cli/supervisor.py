"""``grantbox supervisor run``: started by a compute driver, one per sandbox, not by users."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click
import uvloop

from grantbox.drivers.invocation import MAX_PROXY_WORKERS
from grantbox.heap import settle as settle_heap
from grantbox.logformat import json_logging
from grantbox.sandbox import HidingRefused
from grantbox.sandbox.syscalls import die_with_parent
from grantbox.supervisor import SupervisorOptions, run_supervisor

from .output import fail


@click.group(hidden=True)
def supervisor() -> None:
    """Sandbox supervisor (started by a compute driver)."""


@supervisor.command("run", context_settings={"ignore_unknown_options": False})
@click.option("--gateway", "gateway_url", required=True, help="Gateway base URL.")
@click.option("--sandbox-id", required=True)
@click.option(
    "--token-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The per-sandbox supervisor token (mode 0600).",
)
@click.option("--identity-socket", required=True, help="Workload API socket (unix:///path).")
@click.option("--hide", multiple=True, help="Another directory the agent must not see.")
@click.option("--proxy-port", type=click.IntRange(1, 65535), default=3128, show_default=True)
@click.option("--resolve", multiple=True, help="HOST=IP pinned resolution for the proxy.")
@click.option(
    "--upstream-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Extra CA file the proxy trusts upstream.",
)
@click.option("--env", "declared", multiple=True, help="NAME=VALUE for the agent.")
@click.option("--parent-pid", type=int, help="Stop when this parent process dies.")
@click.option(
    "--metrics-listen",
    metavar="HOST:PORT",
    help="Serve the sandbox proxy's and grant engine's metrics at http://HOST:PORT/metrics.",
)
@click.option(
    "--proxy-workers",
    type=click.IntRange(1, MAX_PROXY_WORKERS),
    default=1,
    show_default=True,
    help="Processes serving the sandbox's egress proxy (the grant engine stays in this one).",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(
    gateway_url: str,
    sandbox_id: str,
    token_file: Path,
    identity_socket: str,
    hide: tuple[str, ...],
    proxy_port: int,
    resolve: tuple[str, ...],
    upstream_ca: Path | None,
    declared: tuple[str, ...],
    parent_pid: int | None,
    metrics_listen: str | None,
    proxy_workers: int,
    command: tuple[str, ...],
) -> None:
    """Run one sandbox: proxy, fence and agent, driven by the gateway."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    click.get_current_context().with_resource(json_logging("info"))
    # One line per long-poll and per exec chunk would drown what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Each retry is logged once by our own loops, with the reason; stamina's line adds none.
    logging.getLogger("stamina").setLevel(logging.ERROR)
    env: dict[str, str] = {}
    for item in declared:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"--env expects NAME=VALUE, got {name!r}")
        env[name] = value
    try:
        options = SupervisorOptions(
            gateway_url=gateway_url,
            sandbox_id=sandbox_id,
            token_file=token_file,
            identity_socket=identity_socket,
            command=command,
            hide=hide,
            proxy_port=proxy_port,
            resolve=resolve,
            upstream_ca_file=upstream_ca,
            declared_env=env,
            metrics_listen=_listen(metrics_listen) if metrics_listen else None,
            proxy_workers=proxy_workers,
        )
        # uvloop: the sandbox's egress proxy runs on libuv (see grantbox proxy run).
        settle_heap()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(run_supervisor(options))
    except (HidingRefused, ValueError) as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"supervisor failed: {type(exc).__name__}: {exc}")
    sys.exit(code)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(
            f"expected HOST:PORT, got {value!r}", param_hint="--metrics-listen"
        )
    return host, int(port)
