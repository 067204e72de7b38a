"""Root command group: each part of grantbox contributes one sub-group.

Sub-groups are imported only when they run, so ``grantbox profile lint`` does not pay for
importing the gateway's web stack, and ``--help`` answers at once.

Whatever goes wrong, the user reads one line on stderr: a usage mistake exits 2 and says
where help is, an interrupted command exits 130, and an unexpected failure says what
failed without a traceback (``GRANTBOX_DEBUG=1`` shows the traceback for a bug report).
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

from grantbox import __version__

from .output import fail
from .terminal import neutralise


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
    "status": _Entry("status", "What is running: gateway, identity agent, driver, sandboxes."),
    "wait": _Entry("status", "Wait until the gateway answers (after `grantbox up &`)."),
    "doctor": _Entry("doctor", "What this machine lacks to run sandboxes, and how to fix it."),
    "version": _Entry("version", "Versions of grantbox and the parts it is built on."),
    "completion": _Entry("completion", "Shell completion script for bash, zsh or fish."),
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

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "grantbox"
            fail(f"{exc.format_message().rstrip('.')} (see `{where} --help`)", code=2)
        except click.ClickException as exc:
            fail(exc.format_message(), code=exc.exit_code)
        except (click.Abort, KeyboardInterrupt, EOFError):
            click.echo("interrupted", err=True)
            raise SystemExit(130) from None
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # `grantbox … | head`: the reader left, fine
                _silence_broken_pipe()
                raise SystemExit(141) from None
            _unexpected(exc)
        except Exception as exc:
            _unexpected(exc)
        raise SystemExit(result if isinstance(result, int) else 0)

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


def _silence_broken_pipe() -> None:
    # Python would complain again while flushing at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _unexpected(exc: BaseException) -> None:
    if os.environ.get("GRANTBOX_DEBUG"):
        raise exc
    detail = neutralise(" ".join(str(exc).split())) or "no detail"
    fail(
        f"unexpected failure: {detail} (this is a bug in grantbox; rerun with "
        "GRANTBOX_DEBUG=1 for the details to report)"
    )


def main() -> None:
    cli(prog_name="grantbox")
