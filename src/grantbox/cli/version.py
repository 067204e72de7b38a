"""``grantbox version``: grantbox's version and those of the parts a bug report needs."""

from __future__ import annotations

import platform
from importlib import metadata

import click

from grantbox import __version__

from .output import emit, output_option, say

PARTS = ("fastapi", "uvicorn", "httpx", "h11", "pydantic", "SQLAlchemy", "spiffe", "grpcio")


def versions() -> dict[str, str]:
    found = {"grantbox": __version__, "python": platform.python_version()}
    for name in PARTS:
        try:
            found[name.lower()] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name.lower()] = "not installed"
    return found


@click.command()
@output_option
def version(fmt: str) -> None:
    """Print the version of grantbox (and, with -o json/yaml, of what it is built on)."""
    found = versions()
    if fmt == "table":
        say(f"grantbox {found.pop('grantbox')}")
        for name, value in found.items():
            say(f"  {name:<11} {value}")
    else:
        emit(found, fmt)
