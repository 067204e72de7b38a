"""How commands print: plain tables for people, stable JSON/YAML for scripts, one-line errors.

Tables are plain columns (no box drawing), like ``kubectl get``, so they read the same in a
terminal, a pipe or a log file; ``--no-headers`` drops the header line for ``awk``/``wc``.
Every cell goes through :func:`neutralise`, because names, URLs and commands may come from
an agent. JSON is ASCII-only (``\\u`` escapes), so even a C1 control character inside a value
never reaches a terminal raw.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import click
import yaml
from rich.cells import cell_len

from .terminal import neutralise

FORMATS = ("table", "json", "yaml")
COLUMN_GAP = "   "


def _remember_no_headers(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta["grantbox.no_headers"] = value
    return value


def output_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-o table|json|yaml`` (passed as ``fmt``) and ``--no-headers`` (read by :func:`emit`)."""
    func = click.option(
        "--no-headers",
        is_flag=True,
        expose_value=False,
        callback=_remember_no_headers,
        help="Tables only: leave out the header line.",
    )(func)
    return click.option(
        "-o",
        "--output",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format; json and yaml are stable for scripts.",
    )(func)


Column = tuple[str, str] | tuple[str, str, Callable[[Any], str]]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) if value else ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def to_json(data: Any, *, indent: int | None = 2) -> str:
    """Stable JSON, ASCII only so no control character survives unescaped."""
    separators = None if indent else (",", ":")
    return json.dumps(data, indent=indent, ensure_ascii=True, separators=separators)


def to_yaml(data: Any) -> str:
    # ASCII only, like JSON: PyYAML then double-quotes and escapes every control character
    # and every non-ASCII one (with allow_unicode it would pass bidi overrides through).
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=False).rstrip()


def render_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, headers: bool = True
) -> list[str]:
    """Plain, aligned lines; every cell neutralised (pure: no terminal involved)."""
    table = [[column[0] for column in columns]] if headers else []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column[1])
            text = column[2](value) if len(column) == 3 else _cell(value)
            cells.append(neutralise(text))
        table.append(cells)
    if not table:
        return []
    widths = [max(cell_len(line[i]) for line in table) for i in range(len(columns))]
    lines = []
    for line in table:
        padded = [cell + " " * (widths[i] - cell_len(cell)) for i, cell in enumerate(line)]
        lines.append(COLUMN_GAP.join(padded).rstrip())
    return lines


def emit(
    data: Any,
    fmt: str,
    columns: Sequence[Column] = (),
    *,
    empty: str = "",
) -> None:
    """Print ``data`` (a mapping or a list of mappings) in the chosen format.

    ``empty`` is the line an empty list prints in table form (on stderr, so that a pipe
    sees no rows at all)."""
    if fmt == "json":
        click.echo(to_json(data))
        return
    if fmt == "yaml":
        click.echo(to_yaml(data))
        return
    rows: Sequence[Mapping[str, Any]] = data if isinstance(data, list) else [data]
    if not rows and empty:
        click.echo(empty, err=True)
        return
    ctx = click.get_current_context(silent=True)
    headers = not (ctx is not None and ctx.meta.get("grantbox.no_headers"))
    for line in render_table(rows, columns, headers=headers):
        click.echo(line)


def say(message: str, *, err: bool = False) -> None:
    """One human line whose parts may come from an agent or the server."""
    click.echo(neutralise(message), err=err)


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr (``error: …``, never doubled), then a non-zero exit."""
    text = message.strip()
    while text.lower().startswith("error:"):
        text = text[len("error:") :].strip()
    click.echo(f"error: {neutralise(text)}", err=True)
    raise SystemExit(code)


def usage_error(message: str) -> NoReturn:
    """A mistake in how the command was called: exit status 2, like click's own."""
    fail(message, code=2)
