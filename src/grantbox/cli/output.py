"""How commands print: tables for people, stable JSON/YAML for scripts, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import click
import yaml
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "json", "yaml")

output_option = click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format; json and yaml are stable for scripts.",
)

Column = tuple[str, str] | tuple[str, str, Callable[[Any], str]]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def emit(data: Any, fmt: str, columns: Sequence[Column] = (), title: str | None = None) -> None:
    """Print ``data`` (a mapping or a list of mappings) in the chosen format."""
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False))
        return
    if fmt == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
        return
    rows: Sequence[Mapping[str, Any]] = data if isinstance(data, list) else [data]
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column[0])
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column[1])
            cells.append(column[2](value) if len(column) == 3 else _cell(value))
        table.add_row(*cells)
    Console(soft_wrap=False, width=_width()).print(table)


def _width() -> int | None:
    return None if sys.stdout.isatty() else 200


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr, then a non-zero exit."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)
