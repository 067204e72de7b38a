"""Root command group: each part of grantbox contributes one sub-group.

Sub-groups are imported only when they run, so ``grantbox profile lint`` does not pay for
importing the gateway's web stack, and ``--help`` answers at once.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click

from grantbox import __version__


@dataclass(frozen=True)
class _Entry:
    module: str
    help: str
    hidden: bool = False


# Order is the order of ``grantbox --help``: the quick start first, then the nouns of the flow.
COMMANDS: dict[str, _Entry] = {
    "up": _Entry(
        "up", "Run the gateway, a local identity agent and the local driver until Ctrl-C."
    ),
    "demo": _Entry("demo", "The alpha/beta demo, end to end, on the embedded default."),
    "profile": _Entry("profile", "Provider profiles: which credentials go where."),
    "provider": _Entry("provider", "Providers: a profile with run-time or stored credentials."),
    "sandbox": _Entry("sandbox", "Sandboxes: a command whose only exit is the egress proxy."),
    "gateway": _Entry("gateway", "The control plane: profiles, providers, sandboxes, supervisors."),
    "identity": _Entry("identity", "Workload identity: the local SPIFFE Workload API agent."),
    "proxy": _Entry("proxy", "The egress proxy on its own: policy, TLS interception, injection."),
    "supervisor": _Entry("supervisor", "Sandbox supervisor (started by a driver).", hidden=True),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, entry in COMMANDS.items() if not entry.hidden]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(f"grantbox.cli.{entry.module}")
        command = getattr(module, cmd_name)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name].help) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="grantbox")
def cli() -> None:
    """grantbox runs untrusted workloads in sandboxes whose only exit is an egress proxy
    that attaches short-lived OAuth tokens obtained from SPIFFE workload identity.

    \b
    Quick start:
      grantbox demo              see a sandboxed curl get alpha and beta tokens
      grantbox up                run everything on this machine, then use the commands below
    """


def main() -> None:
    cli(prog_name="grantbox")
