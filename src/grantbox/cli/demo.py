"""``grantbox demo``: the alpha/beta demo, end to end, on the embedded default."""

from __future__ import annotations

import socket

import click

from grantbox.demo import DemoPorts
from grantbox.demo.run import run_demo

from .output import fail

SERVICES = ("token issuer", "alpha", "beta")


def busy_ports(
    ports: DemoPorts, host: str = "127.0.0.1", *, with_issuer: bool = True
) -> list[tuple[str, int]]:
    """The demo's ports that something else already listens on (bound the way the demo's
    services bind them, so a port merely in TIME_WAIT does not count). Keycloak, when it is
    the issuer, finds its own port."""
    busy = []
    for service, port in zip(SERVICES, (ports.issuer, ports.alpha, ports.beta), strict=True):
        if port == 0 or (service == "token issuer" and not with_issuer):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append((service, port))
    return busy


def _ports(value: str | None) -> DemoPorts:
    if not value:
        return DemoPorts()
    try:
        issuer, alpha, beta = (int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter("expected ISSUER,ALPHA,BETA port numbers") from None
    if not all(0 < port < 65536 for port in (issuer, alpha, beta)):
        raise click.BadParameter("ports must be within 1-65535")
    return DemoPorts(issuer, alpha, beta)


@click.command()
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the sandbox, provider and profile in place and keep everything running "
    "until Ctrl-C.",
)
@click.option(
    "--issuer",
    type=click.Choice(["embedded", "keycloak"]),
    default="embedded",
    show_default=True,
    help="The token service: the demo's own issuer, or real Keycloak (built by `make peers`) "
    "trusting the identity agent's SPIFFE bundle endpoint.",
)
@click.option("--ports", "ports_text", hidden=True, metavar="ISSUER,ALPHA,BETA")
def demo(keep: bool, issuer: str, ports_text: str | None) -> None:
    """Show a sandboxed curl receiving tokens for alpha and beta, minted from the sandbox's
    own SPIFFE identity, with no secret anywhere.

    Starts `grantbox up` (with its own state directories) and the demo's token issuer and
    alpha/beta services on 127.0.0.1:18080-18082, imports the demo profile, creates a
    provider with run-time credentials and a sandbox, runs curl to alpha and beta inside the
    sandbox, shows what each service received and logged, checks it, and cleans up.
    Exits 0 only when every check passed.
    """
    chosen = _ports(ports_text)
    taken = busy_ports(chosen, with_issuer=issuer == "embedded")
    if taken:
        which = ", ".join(f"{port} ({service})" for service, port in taken)
        fail(
            f"the demo needs 127.0.0.1 port{'s' if len(taken) > 1 else ''} {which}, already "
            f"in use; stop what listens there (`ss -ltnp` shows it) and run `grantbox demo` "
            "again"
        )
    raise SystemExit(run_demo(keep=keep, ports=chosen, issuer=issuer))
