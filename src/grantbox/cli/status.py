"""``grantbox status`` (what runs) and ``grantbox wait`` (until the gateway answers).

Both read where the gateway is the way every command does (``--gateway``,
``GRANTBOX_GATEWAY``, or what ``grantbox up`` recorded). ``wait`` is what makes
``grantbox up &`` safe in a script: it returns once the gateway answers its readiness
check, and fails with the last reason after ``--timeout``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import click
import httpx

from .client import (
    GatewayCallError,
    connect,
    gateway_option,
    recorded_gateway,
    resolve_target,
    transport_problem,
)
from .output import emit, fail, output_option, say
from .progress import Progress

WAIT_POLL = 0.2


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def readiness(url: str) -> str:
    """``""`` when the gateway at ``url`` is ready, else why not (one phrase)."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5.0, trust_env=False)
    except httpx.HTTPError as exc:
        return transport_problem(exc)
    if response.status_code != 200:
        try:
            return str(response.json().get("reason") or f"HTTP {response.status_code}")
        except ValueError:
            return f"HTTP {response.status_code}"
    return ""


def _identity_state(identity: Any) -> dict[str, Any] | None:
    if not isinstance(identity, dict):
        return None
    state = dict(identity)
    oidc = identity.get("oidc_url")
    if oidc:
        try:
            answer = httpx.get(
                f"{oidc}/.well-known/openid-configuration", timeout=5.0, trust_env=False
            )
            state["oidc_answers"] = answer.status_code == 200
        except httpx.HTTPError:
            state["oidc_answers"] = False
    return state


def _describe(report: dict[str, Any]) -> list[tuple[str, str]]:
    gateway = report["gateway"]
    if not gateway.get("ready"):
        return [("gateway", f"{gateway.get('url') or '-'}: not answering ({gateway['reason']})")]
    rows = [
        (
            "gateway",
            f"{gateway['url']}: ready, version {gateway.get('version', '?')}, "
            f"database {gateway.get('database', '?')}",
        )
    ]
    identity = report.get("identity")
    if identity and identity.get("spire_agent_socket"):
        rows.append(
            (
                "identity",
                f"SPIRE, spiffe://{identity.get('trust_domain')} (agent socket "
                f"{identity['spire_agent_socket']})",
            )
        )
    elif identity:
        oidc = identity.get("oidc_url") or "-"
        answers = identity.get("oidc_answers")
        health = "" if answers is None else (" (answers)" if answers else " (NOT answering)")
        rows.append(
            (
                "identity agent",
                f"spiffe://{identity.get('trust_domain')}, OIDC discovery at {oidc}{health}",
            )
        )
    else:
        rows.append(("identity agent", "not part of this gateway (SPIRE or your own agent)"))
    driver = report.get("driver")
    rows.append(("driver", driver or "none (sandboxes can be declared but not started)"))
    counts = {k: v for k, v in (report.get("sandboxes") or {}).items() if v}
    text = ", ".join(f"{count} {phase}" for phase, count in counts.items()) or "none"
    rows.append(("sandboxes", text))
    return rows


@click.command()
@gateway_option
@output_option
def status(gateway: str | None, fmt: str) -> None:
    """Show what is running: the gateway, the identity agent, the driver and the sandboxes.

    Exits 1 when no gateway answers.
    """
    try:
        url, _token = resolve_target(gateway)
    except GatewayCallError as exc:
        fail(str(exc))
    report: dict[str, Any] = {"gateway": {"url": url}}
    reason = readiness(url)
    if reason:
        pid = recorded_gateway().get("pid")
        if not gateway and not os.environ.get("GRANTBOX_GATEWAY") and not _pid_alive(pid):
            reason += "; the `grantbox up` that recorded it is not running"
        report["gateway"].update(ready=False, reason=reason)
    else:
        try:
            with connect(gateway) as client:
                details: dict[str, Any] = client.call("GET", "/status")
        except GatewayCallError as exc:
            fail(str(exc))
        report["gateway"].update(
            ready=True, version=details.get("version"), database=details.get("database")
        )
        report["identity"] = _identity_state(details.get("identity"))
        report["driver"] = details.get("driver")
        report["sandboxes"] = details.get("sandboxes") or {}
    if fmt == "table":
        for part, text in _describe(report):
            say(f"{part:<15} {text}")
    else:
        emit(report, fmt)
    if not report["gateway"].get("ready"):
        raise SystemExit(1)


@click.command()
@gateway_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Give up after this long.",
)
def wait(gateway: str | None, timeout: float) -> None:
    """Wait until the gateway answers (for scripts: `grantbox up &` then `grantbox wait`)."""
    progress = Progress("gateway")
    deadline = time.monotonic() + timeout
    reason = "nothing recorded yet"
    try:
        while True:
            try:
                url, _token = resolve_target(gateway)
            except GatewayCallError as exc:
                reason = "no gateway recorded yet" if not recorded_gateway() else str(exc)
            else:
                reason = readiness(url)
                if not reason:
                    progress.done(f"ready at {url}")
                    return
                reason = f"{url}: {reason}"
            if time.monotonic() >= deadline:
                progress.clear()
                fail(f"no gateway became ready within {timeout:g} s (last: {reason})")
            progress.show(f"waiting ({reason})")
            time.sleep(WAIT_POLL)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
