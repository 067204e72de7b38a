"""Root command group: each part of grantbox contributes one sub-group."""

from __future__ import annotations

import click

from grantbox import __version__

from .demo import demo
from .gateway import gateway
from .identity import identity
from .profile import profile
from .provider import provider
from .proxy import proxy
from .sandbox import sandbox
from .supervisor import supervisor
from .up import up


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="grantbox")
def cli() -> None:
    """grantbox runs untrusted workloads in sandboxes whose only exit is an egress proxy
    that attaches short-lived OAuth tokens obtained from SPIFFE workload identity."""


cli.add_command(profile)
cli.add_command(gateway)
cli.add_command(provider)
cli.add_command(proxy)
cli.add_command(sandbox)
cli.add_command(identity)
cli.add_command(supervisor)
cli.add_command(up)
cli.add_command(demo)


def main() -> None:
    cli(prog_name="grantbox")
