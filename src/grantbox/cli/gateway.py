"""``grantbox gateway serve``: run the control plane in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from pathlib import Path

import click

from grantbox.drivers import DriverError, make_driver
from grantbox.gateway import GatewayServer, GatewaySettings
from grantbox.gateway.settings import DEFAULT_LISTEN, parse_listen
from grantbox.heap import settle as settle_heap
from grantbox.logformat import json_logging

from .output import fail
from .statelock import StateDirectoryBusy, holding_state_dir


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.group()
def gateway() -> None:
    """The control plane: profiles, providers, sandboxes and the supervisor API."""


@gateway.command()
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    envvar="GRANTBOX_DB_URL",
    show_envvar=True,
    help="Database URL (default: SQLite in the state dir). Prefer the environment variable for "
    "URLs with passwords, so they stay out of the process list.",
)
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    envvar="GRANTBOX_LISTEN",
    show_envvar=True,
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keys and the default database (default: user data dir or $GRANTBOX_STATE_DIR).",
)
@click.option(
    "--driver",
    "driver_name",
    metavar="NAME",
    envvar="GRANTBOX_DRIVER",
    show_envvar=True,
    help="Compute driver to start sandboxes.",
)
@click.option(
    "--advertise-url",
    metavar="URL",
    envvar="GRANTBOX_ADVERTISE_URL",
    show_envvar=True,
    help="URL supervisors dial, when not the listen address (e.g. a Service name).",
)
@click.option(
    "--agent-uids",
    metavar="FIRST:COUNT",
    envvar="GRANTBOX_AGENT_UIDS",
    show_envvar=True,
    help="Kernel uids for sandbox agents, one per sandbox (default 1900000000:65536).",
)
def serve(
    db_url: str | None,
    listen: str,
    state_dir: Path | None,
    driver_name: str | None,
    advertise_url: str | None,
    agent_uids: str | None,
) -> None:
    """Serve the gateway API until interrupted.

    \b
    Example:
      grantbox gateway serve --listen 127.0.0.1:7443
    """
    try:
        host, _ = parse_listen(listen)
    except ValueError as exc:
        fail(str(exc))
    click.get_current_context().with_resource(json_logging("info"))
    try:
        settings = GatewaySettings.from_env(
            db_url=db_url,
            listen=listen,
            state_dir=state_dir,
            advertise_url=advertise_url,
            agent_uids=agent_uids,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        fail(f"cannot start the gateway: {' '.join(str(exc).split())}")
    # Two gateways on one SQLite file would silently share it: the default database is
    # held like `grantbox up` holds it (other databases serve several replicas).
    lock = (
        holding_state_dir(settings.state_dir, "grantbox gateway serve")
        if not settings.db_url
        else contextlib.nullcontext()
    )
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lock)
            driver = make_driver(driver_name) if driver_name else None
            server = GatewayServer(settings, driver, driver_name=driver_name or "")
        except StateDirectoryBusy as exc:
            fail(str(exc))
        except (DriverError, OSError, ValueError, RuntimeError) as exc:
            fail(f"cannot start the gateway: {' '.join(str(exc).split())}")
        _serve(server, settings, host, driver is None)


def _serve(server: GatewayServer, settings: GatewaySettings, host: str, no_driver: bool) -> None:
    server.write_client_config()
    if not _is_loopback(host):
        click.echo(
            f"warning: listening on {host} without TLS; tokens cross the network in clear "
            "text (put a TLS-terminating proxy in front)",
            err=True,
        )
    click.echo(
        f"gateway listening on {server.url} (operator token: {settings.operator_token_path}; "
        f"database: {server.gateway.store.backend})",
        err=True,
    )
    if no_driver:
        click.echo("no compute driver: sandboxes can be declared but not started", err=True)
    settle_heap()
    asyncio.run(server.serve())
