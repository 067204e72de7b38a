"""``grantbox profile``: lint, inspect and (through the gateway) manage provider profiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from grantbox.profiles import (
    Diagnostic,
    LoadResult,
    expand_bindings,
    export_data,
    find_collisions,
    has_errors,
    load_paths,
    profile_json_schema,
    validate_profiles,
)

from .client import connect, gateway_option, reports_gateway_errors
from .naming import name_options
from .output import emit, fail, output_option, say

_DIAGNOSTIC_COLUMNS = (
    ("SEVERITY", "severity"),
    ("PROFILE", "profile"),
    ("FIELD", "field"),
    ("MESSAGE", "message"),
)

_BINDING_COLUMNS = (
    ("PROVIDER:CREDENTIAL", "owner"),
    ("HOST", "host"),
    ("PORT", "port"),
    ("PATH", "path"),
    ("AUDIENCE", "audience"),
    ("SCOPES", "scopes"),
    ("SVID AUDIENCE", "svid_audience"),
    ("HEADER", "header"),
    ("FROM", "origin"),
)


@click.group()
def profile() -> None:
    """Provider profiles: which credentials a provider has and where they may go."""


def _sources(file: tuple[Path, ...], directory: tuple[Path, ...]) -> list[Path]:
    paths = [*file, *directory]
    if not paths:
        fail("give a profile with -f FILE or a directory with --from DIR")
    for path in directory:
        if not path.is_dir():
            fail(f"--from {path}: not a directory")
    return paths


def _load_and_validate(paths: list[Path]) -> tuple[LoadResult, list[Diagnostic]]:
    result = load_paths(paths)
    diagnostics = list(result.diagnostics)
    diagnostics.extend(validate_profiles(p.profile for p in result.profiles))
    diagnostics.sort(key=lambda d: (d.severity != "error", d.profile, d.field))
    return result, diagnostics


_file_option = click.option(
    "-f",
    "--file",
    "file",
    multiple=True,
    type=click.Path(exists=True, dir_okay=True, path_type=Path),
    help="A profile file (YAML with one or more documents, or JSON). Repeatable.",
)
_from_option = click.option(
    "--from",
    "directory",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A directory of .yaml/.yml/.json profile files. Repeatable.",
)


@profile.command()
@_file_option
@_from_option
@output_option
def lint(file: tuple[Path, ...], directory: tuple[Path, ...], fmt: str) -> None:
    """Check profiles locally; exit 1 when any error is found.

    \b
    Example:
      grantbox profile lint -f examples/spiffe-token-grant-demo/provider-profile.yaml
    """
    result, diagnostics = _load_and_validate(_sources(file, directory))
    errors = has_errors(diagnostics)
    if fmt == "table":
        if diagnostics:
            emit([d.as_dict() for d in diagnostics], fmt, _DIAGNOSTIC_COLUMNS)
        count = len(result.profiles)
        verdict = "invalid" if errors else "valid"
        click.echo(f"{count} profile{'s' if count != 1 else ''} checked: {verdict}")
    else:
        emit(
            {
                "valid": not errors,
                "profiles": [p.profile.id for p in result.profiles],
                "diagnostics": [d.as_dict() for d in diagnostics],
            },
            fmt,
        )
    raise SystemExit(1 if errors else 0)


@profile.command()
@_file_option
@_from_option
@click.option(
    "--provider",
    "providers",
    multiple=True,
    metavar="NAME=PROFILE_ID",
    help="Attach a profile under a provider name (default: each profile as its own id).",
)
@output_option
def bindings(
    file: tuple[Path, ...], directory: tuple[Path, ...], providers: tuple[str, ...], fmt: str
) -> None:
    """Show the grant bindings the profiles expand to, most specific selectors first.

    This is exactly what a sandbox with these providers attached would enforce.
    """
    result, diagnostics = _load_and_validate(_sources(file, directory))
    if has_errors(diagnostics):
        for diagnostic in diagnostics:
            click.echo(str(diagnostic), err=True)
        fail("the profiles have errors; fix them (see `grantbox profile lint`) first")
    by_id = {p.profile.id: p.profile for p in result.profiles}
    attachments = []
    if providers:
        for item in providers:
            name, sep, profile_id = item.partition("=")
            if not sep or not name or profile_id not in by_id:
                fail(f"--provider {item!r}: expected NAME=PROFILE_ID with a loaded profile id")
            attachments.append((name, by_id[profile_id]))
    else:
        attachments = [(pid, prof) for pid, prof in by_id.items()]
    binding_set = expand_bindings(attachments)
    collisions = find_collisions(binding_set)
    rows = []
    for binding in binding_set:
        row = binding.to_dict()
        row["owner"] = binding.owner
        row["path"] = binding.path or "/**"
        row["header"] = f"{binding.header_name} ({binding.header_style})"
        rows.append(row)
    if fmt == "table":
        say(f"grant bindings ({binding_set.content_hash[:19]})", err=True)
        emit(rows, fmt, _BINDING_COLUMNS)
    else:
        emit(
            {
                "content_hash": binding_set.content_hash,
                "bindings": binding_set.to_list(),
                "collisions": [c.message() for c in collisions],
            },
            fmt,
        )
    for collision in collisions:
        click.echo(f"error: {collision.message()}", err=True)
    raise SystemExit(1 if collisions else 0)


@profile.command()
def schema() -> None:
    """Print the JSON Schema of a provider profile document."""
    click.echo(json.dumps(profile_json_schema(), indent=2))


# -- through the gateway ----------------------------------------------------------------------

_PROFILE_COLUMNS = (
    ("ID", "id"),
    ("CATEGORY", "category"),
    ("BUILT IN", "builtin", lambda v: "yes" if v else "no"),
    ("CREDENTIALS", "credentials"),
    ("RUNTIME CREDENTIALS", "runtime_credentials", lambda v: "yes" if v else "no"),
    ("VERSION", "resource_version"),
)


def _documents_from(paths: list[Path]) -> list[dict[str, Any]]:
    """Parse locally (so a YAML typo is reported with its file), validate at the gateway."""
    result = load_paths(paths)
    if result.diagnostics:
        count = len(result.diagnostics)
        more = f" (and {count - 1} more)" if count > 1 else ""
        fail(f"{result.diagnostics[0]}{more}; see `grantbox profile lint`")
    return [export_data(p.profile) for p in result.profiles]


@profile.command("import")
@_file_option
@_from_option
@gateway_option
@output_option
@reports_gateway_errors
def import_(
    file: tuple[Path, ...], directory: tuple[Path, ...], gateway: str | None, fmt: str
) -> None:
    """Import new profiles into the gateway (create-only; all or nothing)."""
    documents = _documents_from(_sources(file, directory))
    with connect(gateway) as client:
        answer = client.call("POST", "/profiles", body={"documents": documents})
    emit(answer["imported"], fmt, _PROFILE_COLUMNS)


@profile.command("list")
@gateway_option
@output_option
@reports_gateway_errors
def list_(gateway: str | None, fmt: str) -> None:
    """List built-in and imported profiles."""
    with connect(gateway) as client:
        emit(client.call("GET", "/profiles"), fmt, _PROFILE_COLUMNS, empty="no profiles")


@profile.command("export")
@name_options("profile", metavar="ID")
@gateway_option
@click.option(
    "-o", "--output", "fmt", type=click.Choice(("yaml", "json")), default="yaml", show_default=True
)
@reports_gateway_errors
def export(name: str, gateway: str | None, fmt: str) -> None:
    """Print a profile with its resource_version, ready to edit and `profile update`."""
    with connect(gateway) as client:
        answer = client.call("GET", f"/profiles/{name}")
    emit(answer["document"], fmt)


@profile.command("update")
@name_options("profile", metavar="ID")
@click.option(
    "-f",
    "--file",
    "file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The edited export (must keep its resource_version).",
)
@gateway_option
@output_option
@reports_gateway_errors
def update(name: str, file: Path, gateway: str | None, fmt: str) -> None:
    """Replace a profile; refused if it changed since the export you edited."""
    documents = _documents_from([file])
    if len(documents) != 1:
        fail(f"{file}: an update takes exactly one profile, found {len(documents)}")
    with connect(gateway) as client:
        answer = client.call("PUT", f"/profiles/{name}", body={"document": documents[0]})
    emit(answer, fmt, _PROFILE_COLUMNS)


@profile.command("delete")
@name_options("profile", metavar="ID")
@gateway_option
@reports_gateway_errors
def delete(name: str, gateway: str | None) -> None:
    """Delete an imported profile (refused while a provider uses it)."""
    with connect(gateway) as client:
        client.call("DELETE", f"/profiles/{name}")
    say(f"profile {name} deleted")
