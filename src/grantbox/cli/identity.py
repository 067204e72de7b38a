"""``grantbox identity``: run the local SPIFFE Workload API agent."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from grantbox.heap import settle as settle_heap
from grantbox.identity_agent import (
    DEFAULT_ROTATION_INTERVAL,
    DEFAULT_SVID_TTL,
    DEFAULT_X509_SVID_TTL,
    IdentityAgent,
    KeystoreError,
    parse_workload_option,
)
from grantbox.logformat import json_logging

from .output import fail


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; port 0 picks a free port."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


@click.group("identity")
def identity() -> None:
    """Workload identity: the local SPIFFE Workload API agent."""


@identity.command("serve")
@click.option(
    "--socket-dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory holding one NAME/agent.sock per workload.",
)
@click.option("--trust-domain", required=True, help="Trust domain, e.g. example.org.")
@click.option(
    "workloads",
    "--workload",
    multiple=True,
    metavar="NAME=SPIFFE_PATH[:UID,...]",
    help="Register a workload; optional uid allow-list. Repeatable.",
)
@click.option(
    "--oidc-listen",
    metavar="HOST:PORT",
    help="Serve OIDC discovery and /keys here (port 0 = any free port).",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="Where signing keys persist (0600). Without it keys live in memory only.",
)
@click.option("--issuer", help="Issuer URL: sets the iss claim and the discovery issuer.")
@click.option(
    "--admin-socket",
    type=click.Path(path_type=Path),
    help="Root-only unix socket for adding and removing workloads at run time.",
)
@click.option(
    "--algorithm", type=click.Choice(["ES256", "RS256"]), default="ES256", show_default=True
)
@click.option(
    "--svid-ttl",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_SVID_TTL,
    show_default=True,
    help="JWT-SVID lifetime in seconds.",
)
@click.option(
    "--x509-svid-ttl",
    type=click.FloatRange(min=2.0),
    default=DEFAULT_X509_SVID_TTL,
    show_default=True,
    help="X.509-SVID lifetime in seconds (rotated at half-life).",
)
@click.option(
    "--rotation-interval",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_ROTATION_INTERVAL,
    show_default=True,
    help="Seconds between signing key rotations.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(
    socket_dir: Path,
    trust_domain: str,
    workloads: tuple[str, ...],
    oidc_listen: str | None,
    state_dir: Path | None,
    issuer: str | None,
    admin_socket: Path | None,
    algorithm: str,
    svid_ttl: float,
    x509_svid_ttl: float,
    rotation_interval: float,
    log_level: str,
) -> None:
    """Serve the SPIFFE Workload API (JWT- and X.509-SVIDs) in the foreground until
    SIGINT/SIGTERM."""
    click.get_current_context().with_resource(json_logging(log_level))
    try:
        listen = parse_listen(oidc_listen) if oidc_listen else None
        agent = IdentityAgent(
            socket_dir=socket_dir,
            trust_domain=trust_domain,
            state_dir=state_dir,
            oidc_listen=listen,
            issuer=issuer,
            algorithm=algorithm,
            svid_ttl=svid_ttl,
            rotation_interval=rotation_interval,
            admin_socket=admin_socket,
            x509_svid_ttl=x509_svid_ttl,
        )
        for option in workloads:
            name, path, uids = parse_workload_option(option)
            agent.add_workload(name, path, uids=uids)
    except ValueError as exc:
        fail(str(exc))
    try:
        settle_heap()
        asyncio.run(_run(agent))
    except (OSError, KeystoreError) as exc:
        fail(f"identity agent failed: {exc}")


async def _run(agent: IdentityAgent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    try:
        _print_summary(agent)
        await stop.wait()
    finally:
        await agent.stop()
    click.echo("identity agent stopped")


def _print_summary(agent: IdentityAgent) -> None:
    click.echo(f"identity agent ready: trust domain {agent.trust_domain}")
    for name, registration in sorted(agent.workloads().items()):
        click.echo(
            f"  workload {name}: socket {agent.socket_path(name)} -> {registration.spiffe_id}"
        )
    if agent.oidc_url is not None:
        click.echo(f"  oidc discovery: {agent.oidc_url}/.well-known/openid-configuration")
        click.echo(f"  jwks: {agent.oidc_url}/keys")
        click.echo(f"  spiffe bundle endpoint: {agent.bundle_url}")
    if agent.admin_socket is not None:
        click.echo(f"  admin socket: {agent.admin_socket}")
    sys.stdout.flush()
