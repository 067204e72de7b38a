"""The grantbox side of the interop tests: ``grantbox proxy run`` as a process, configured
with one Keycloak-backed profile, and a protected service that verifies Keycloak's tokens."""

from __future__ import annotations

import contextlib
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from grantbox.demo.keycloak import Keycloak
from grantbox.demo.workloads import WorkloadProcess, find_example_dir, workload_environment
from tests.support.peers import Daemon

from .conftest import GRANTBOX, REALM

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"


def keycloak_profile(keycloak: Keycloak, service: str, port: int, **grant: Any) -> dict[str, Any]:
    """A profile whose grant goes to Keycloak's realm token endpoint. The SVID audience is
    left out on purpose: it is derived from the ``/realms/<name>/`` path."""
    token_grant: dict[str, Any] = {
        "token_endpoint": keycloak.token_url(REALM),
        "client_assertion_type": JWT_SPIFFE,
        "audience_overrides": [
            {"host": f"{service}.localhost", "audience": service, "scopes": [service]}
        ],
    }
    token_grant.update(grant)
    return {
        "id": f"keycloak-{service}",
        "credentials": [
            {
                "name": "access_token",
                "required": True,
                "auth_style": "bearer",
                "header_name": "Authorization",
                "token_grant": token_grant,
            }
        ],
        "endpoints": [
            {
                "host": f"{service}.localhost",
                "port": port,
                "protocol": "rest",
                "access": "read-write",
                "allowed_ips": ["127.0.0.1"],
            }
        ],
    }


class Proxy:
    def __init__(self, daemon: Daemon, port: int, events: Path) -> None:
        self.daemon = daemon
        self.port = port
        self.events_path = events

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.daemon.log_path.read_text(errors="replace")

    def events(self) -> str:
        return self.events_path.read_text(errors="replace")


@contextlib.contextmanager
def running_proxy(profile: dict[str, Any], identity_socket: Path) -> Iterator[Proxy]:
    """``grantbox proxy run`` with ``profile`` attached, SVIDs from ``identity_socket``."""
    root = Path(tempfile.mkdtemp(prefix="gbx-px-"))
    (root / "profile.yaml").write_text(yaml.safe_dump(profile))
    (root / "proxy.yaml").write_text(
        yaml.safe_dump(
            {
                "sandbox_id": "interop",
                "profiles": ["./profile.yaml"],
                "providers": [{"name": "keycloak", "profile": profile["id"]}],
            }
        )
    )
    events = root / "events.jsonl"
    argv = [
        str(GRANTBOX),
        "proxy",
        "run",
        "--config",
        str(root / "proxy.yaml"),
        "--listen",
        "127.0.0.1:0",
        "--identity-socket",
        f"unix:{identity_socket}",
    ]
    # stdout carries the OCSF events, stderr the log: the shell keeps them apart.
    shell = ["/bin/sh", "-c", 'exec "$@" >"$0"', str(events), *argv]
    daemon = Daemon("grantbox proxy run", shell, root / "proxy.log")
    found: dict[str, int] = {}

    def listening() -> bool:
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", daemon.log_path.read_text())
        if match:
            found["port"] = int(match.group(1))
        return bool(match)

    try:
        daemon.start()
        daemon.wait_until(listening, "listening line", timeout=60)
        yield Proxy(daemon, found["port"], events)
    finally:
        daemon.stop()


@contextlib.contextmanager
def protected_service(name: str, keycloak: Keycloak, log_dir: Path) -> Iterator[WorkloadProcess]:
    """The demo's protected service, trusting Keycloak's realm: it verifies each access
    token's signature with the realm's JWKS, its issuer, and audience + scope = ``name``."""
    example = find_example_dir()
    service = WorkloadProcess(
        name,
        [
            sys.executable,
            str(example / "service.py"),
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--issuer-jwks",
            keycloak.jwks_url(REALM),
            "--issuer",
            keycloak.realm_url(REALM),
            "--leeway",
            "5",
        ],
        log_dir / f"{name}.log",
        env=workload_environment(),
    )
    try:
        service.start()
        service.wait_ready(30)
        yield service
    finally:
        service.stop()


def service_port(service: WorkloadProcess) -> int:
    return int(service.url.rsplit(":", 1)[1])


def requests_seen(service: WorkloadProcess) -> int:
    """Requests the service decided on (accepted or refused): zero means nothing arrived."""
    return sum(
        1 for line in service.log_lines() if "accepted request" in line or "refused request" in line
    )
