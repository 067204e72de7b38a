"""Readable progress for ``grantbox demo``: one line per step, the claims each service
received, the services' proof-of-life lines, and every check with its verdict."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .checks import Check

SHOWN_CLAIMS = ("aud", "scope", "azp", "client_id", "iss", "exp")


class StepFailed(Exception):
    """A demo step could not be completed; the message is what the user needs to know."""


class Reporter:
    def __init__(self, console: Console | None = None) -> None:
        # Long lines (SPIFFE IDs, log lines) are never wrapped mid-value, on a terminal or not.
        self.console = console or Console(highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        """``→ title`` now, then ``✓`` with the time taken, or ``✗`` and the reason."""
        self.console.print(f"[bold]→[/] {escape(title)}")
        started = time.monotonic()
        try:
            yield
        except Exception as exc:
            self.console.print(f"  [red]✗ {escape(str(exc))}[/]")
            raise
        self.console.print(f"  [green]✓[/] [dim]{time.monotonic() - started:.1f}s[/]")

    def note(self, text: str) -> None:
        self.console.print(f"  {escape(text)}")

    def claims(self, service: str, status: int, claims: Mapping[str, Any]) -> None:
        table = Table(title=f"{service} answered {status} with the claims it received")
        table.add_column("claim")
        table.add_column("value", overflow="fold")
        for name in SHOWN_CLAIMS:
            value = claims.get(name)
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            table.add_row(name, escape(text))
        self.console.print(table)

    def proof_of_life(self, service: str, lines: Iterable[str]) -> None:
        self.console.print(f"[bold]{escape(service)}[/] logged:")
        shown = 0
        for line in lines:
            self.console.print(f"  [cyan]{escape(line)}[/]")
            shown += 1
        if not shown:
            self.console.print("  [red](no accepted request)[/]")

    def checks(self, checks: Iterable[Check]) -> bool:
        """Print every check; True when all passed."""
        passed = True
        for check in checks:
            mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
            self.console.print(f"  {mark} {escape(check.name)} [dim]({escape(check.detail)})[/]")
            passed = passed and check.ok
        return passed
