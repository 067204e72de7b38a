"""One way to name a resource on every verb: ``NAME`` or ``-n/--name NAME``.

``grantbox sandbox get box``, ``grantbox sandbox get -n box`` and ``--name box`` all mean the
same, on every verb of every noun. Commands that run something inside a sandbox take it
after ``--`` and only there, so ``sandbox exec -n box -- true`` can never read ``-n box`` as
part of the command (click alone cannot tell where ``--`` stood; :class:`CommandAfterDashes`
splits the arguments before click parses them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .output import usage_error

F = TypeVar("F", bound=Callable[..., Any])

_AFTER_DASHES = "grantbox.after_dashes"


def name_options(kind: str, *, metavar: str = "NAME", required: bool = True) -> Callable[[F], F]:
    """Add ``[NAME]`` and ``-n/--name NAME``; the command receives one ``name`` argument."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            positional = kwargs.pop("name_argument")
            option = kwargs.pop("name_option")
            if positional and option and positional != option:
                usage_error(
                    f"two {kind} names given ({positional!r} and {option!r}); "
                    f"give {metavar} or -n {metavar}, once"
                )
            name = positional or option
            if not name and required:
                usage_error(f"which {kind}? give its name: {metavar} or -n {metavar}")
            kwargs["name"] = name or ""
            return func(*args, **kwargs)

        command = click.argument("name_argument", metavar=f"[{metavar}]", required=False)(wrapper)
        command = click.option(
            "-n",
            "--name",
            "name_option",
            metavar=metavar,
            help=f"The {kind} (or give it as {metavar}).",
        )(command)
        return command  # type: ignore[return-value]

    return decorate


class CommandAfterDashes(click.Command):
    """A command whose trailing ``-- CMD...`` is taken verbatim (see :func:`after_dashes`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta[_AFTER_DASHES] = tuple(args[cut + 1 :])
            args = args[:cut]
        else:
            ctx.meta[_AFTER_DASHES] = ()
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "[-- COMMAND...]"]


def after_dashes() -> tuple[str, ...]:
    """What followed ``--`` on the command line (empty when there was no ``--``)."""
    value: tuple[str, ...] = click.get_current_context().meta.get(_AFTER_DASHES, ())
    return value
