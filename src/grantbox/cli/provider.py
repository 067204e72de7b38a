"""``grantbox provider``: providers are a profile plus where its credentials come from."""

from __future__ import annotations

import os
from typing import Any

import click

from .client import connect, gateway_option, reports_gateway_errors
from .naming import name_options
from .output import emit, fail, output_option, say, usage_error

NO_PROVIDERS = "no providers (create one with `grantbox provider create NAME --type PROFILE`)"

_COLUMNS = (
    ("NAME", "name"),
    ("TYPE", "type"),
    ("RUNTIME CREDENTIALS", "runtime_credentials", lambda v: "yes" if v else "no"),
    ("STORED CREDENTIALS", "credentials"),
    ("ATTACHED TO", "attached_to"),
    ("VERSION", "resource_version"),
)


def _credential_values(items: tuple[str, ...]) -> dict[str, str]:
    """``K=V`` pairs; a bare ``K`` takes its value from the environment variable ``K``."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            fail(f"--credential {item!r}: expected NAME=VALUE or NAME")
        if not sep:
            if key not in os.environ:
                fail(f"--credential {key}: no value given and ${key} is not set")
            value = os.environ[key]
        if key in values:
            fail(f"--credential {key} given twice")
        values[key] = value
    return values


@click.group()
def provider() -> None:
    """Providers: an instance of a profile, with run-time or stored credentials."""


@provider.command("create")
@name_options("provider")
@click.option("--type", "profile_id", required=True, metavar="PROFILE", help="Profile id.")
@click.option(
    "--runtime-credentials",
    is_flag=True,
    help="Store no secret: every required credential is obtained at run time (token grants).",
)
@click.option(
    "--credential",
    "credentials",
    multiple=True,
    metavar="NAME=VALUE",
    help="A stored credential (sealed at rest). NAME alone reads $NAME. Repeatable.",
)
@gateway_option
@output_option
@reports_gateway_errors
def create(
    name: str,
    profile_id: str,
    runtime_credentials: bool,
    credentials: tuple[str, ...],
    gateway: str | None,
    fmt: str,
) -> None:
    """Create a provider: a profile plus where its credentials come from.

    A profile whose credentials are all token grants takes --runtime-credentials (no secret
    is stored); a profile with no credentials at all (network access only) needs neither.

    \b
    Example:
      grantbox provider create demo --type spiffe-token-grant-demo --runtime-credentials
    """
    if runtime_credentials and credentials:
        usage_error("give either --runtime-credentials or --credential, not both")
    body = {
        "name": name,
        "type": profile_id,
        "runtime_credentials": runtime_credentials,
        "credentials": _credential_values(credentials),
    }
    with connect(gateway) as client:
        emit(client.call("POST", "/providers", body=body), fmt, _COLUMNS)


@provider.command("list")
@gateway_option
@output_option
@reports_gateway_errors
def list_(gateway: str | None, fmt: str) -> None:
    """List providers."""
    with connect(gateway) as client:
        emit(client.call("GET", "/providers"), fmt, _COLUMNS, empty=NO_PROVIDERS)


@provider.command("get")
@name_options("provider")
@gateway_option
@output_option
@reports_gateway_errors
def get(name: str, gateway: str | None, fmt: str) -> None:
    """Show one provider (credential names only, never values)."""
    with connect(gateway) as client:
        emit(client.call("GET", f"/providers/{name}"), fmt, _COLUMNS)


@provider.command("update")
@name_options("provider")
@click.option("--type", "profile_id", metavar="PROFILE", help="Switch to another profile.")
@click.option("--runtime-credentials", is_flag=True, help="Switch to run-time credentials.")
@click.option("--credential", "credentials", multiple=True, metavar="NAME=VALUE")
@click.option(
    "--resource-version",
    type=int,
    help="Refuse the update unless the provider is still at this version.",
)
@gateway_option
@output_option
@reports_gateway_errors
def update(
    name: str,
    profile_id: str | None,
    runtime_credentials: bool,
    credentials: tuple[str, ...],
    resource_version: int | None,
    gateway: str | None,
    fmt: str,
) -> None:
    """Change a provider's profile or credentials; attached sandboxes are re-checked."""
    if runtime_credentials and credentials:
        usage_error("give either --runtime-credentials or --credential, not both")
    with connect(gateway) as client:
        if resource_version is None:
            resource_version = int(client.call("GET", f"/providers/{name}")["resource_version"])
        body: dict[str, Any] = {"resource_version": resource_version}
        if profile_id:
            body["type"] = profile_id
        if runtime_credentials:
            body["runtime_credentials"] = True
        if credentials:
            body["credentials"] = _credential_values(credentials)
        emit(client.call("PATCH", f"/providers/{name}", body=body), fmt, _COLUMNS)


@provider.command("delete")
@name_options("provider")
@gateway_option
@reports_gateway_errors
def delete(name: str, gateway: str | None) -> None:
    """Delete a provider (refused while it is attached to a sandbox)."""
    with connect(gateway) as client:
        client.call("DELETE", f"/providers/{name}")
    say(f"provider {name} deleted")
