"""The demo with real Keycloak as the token service, instead of the demo's own issuer.

Keycloak (built by ``make peers``) imports the demo realm
(``examples/spiffe-token-grant-demo/grantbox-demo-realm.json``): a SPIFFE identity provider that
trusts the embedded identity agent's trust domain through the agent's SPIFFE bundle
endpoint, and client scopes ``alpha`` and ``beta`` whose audience mappers give the token
the service's audience. Once the sandbox exists, its SPIFFE ID is registered as a
``federated-jwt`` client; alpha and beta verify Keycloak's tokens with the realm's JWKS.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .checks import Check, check_keycloak_answer
from .keycloak import Keycloak, KeycloakError, running_keycloak
from .peers import PeersMissing, load_peers
from .workloads import (
    SERVICES,
    DemoPorts,
    IdentitySettings,
    WorkloadError,
    WorkloadProcess,
    find_example_dir,
    workload_environment,
)

REALM = "grantbox-demo"
REALM_FILE = "grantbox-demo-realm.json"  # Keycloak wants <realm>-realm.json
IDENTITY_PROVIDER = "grantbox"


@dataclass
class KeycloakServices:
    """Keycloak and the two services that trust it."""

    keycloak: Keycloak
    alpha: WorkloadProcess
    beta: WorkloadProcess

    @property
    def realm_url(self) -> str:
        return self.keycloak.realm_url(REALM)

    def service(self, name: str) -> WorkloadProcess:
        if name == "alpha":
            return self.alpha
        if name == "beta":
            return self.beta
        raise KeyError(name)

    def register(self, spiffe_id: str) -> None:
        """A Keycloak client for the sandbox: its JWT-SVID is its only credential."""
        try:
            self.keycloak.add_spiffe_client(
                REALM, spiffe_id, IDENTITY_PROVIDER, optional_scopes=SERVICES
            )
        except KeycloakError as exc:
            raise WorkloadError(f"Keycloak refused the sandbox's client: {exc}") from None

    def answer_checks(self, service: str, answer: str, spiffe_id: str) -> list[Check]:
        return check_keycloak_answer(service, answer, spiffe_id, self.realm_url)


def keycloak_service_argv(
    python: str, example_dir: Path, name: str, port: int, keycloak: Keycloak
) -> list[str]:
    return [
        python,
        str(example_dir / "service.py"),
        "--name",
        name,
        "--listen",
        f"127.0.0.1:{port}",
        "--issuer-jwks",
        keycloak.jwks_url(REALM),
        "--issuer",
        keycloak.realm_url(REALM),
        "--leeway",
        "5",
    ]


def keycloak_profile(
    profile: dict[str, Any], ports: DemoPorts, keycloak: Keycloak
) -> dict[str, Any]:
    """The demo profile pointed at Keycloak's realm. ``jwt_svid_audience`` is dropped: the
    default derived from the ``/realms/<name>/`` token endpoint is the realm's issuer, which
    is exactly what Keycloak wants in the SVID."""
    moved: dict[str, Any] = yaml.safe_load(yaml.safe_dump(profile))
    grant = moved["credentials"][0]["token_grant"]
    grant["token_endpoint"] = keycloak.token_url(REALM)
    grant.pop("jwt_svid_audience", None)
    for endpoint in moved["endpoints"]:
        endpoint["port"] = ports.of(endpoint["host"].split(".", 1)[0])
    return moved


def write_keycloak_profile(
    example_dir: Path, ports: DemoPorts, keycloak: Keycloak, work: Path
) -> Path:
    original = yaml.safe_load((example_dir / "provider-profile.yaml").read_text())
    path = work / "provider-profile-keycloak.yaml"
    path.write_text(yaml.safe_dump(keycloak_profile(original, ports, keycloak), sort_keys=False))
    return path


@contextlib.contextmanager
def running_keycloak_services(
    identity: IdentitySettings,
    log_dir: Path,
    work: Path,
    *,
    ports: DemoPorts,
    python: str = sys.executable,
    ready_timeout: float = 300.0,
) -> Iterator[KeycloakServices]:
    """Keycloak trusting ``identity``'s trust domain, then alpha and beta trusting Keycloak."""
    try:
        peers = load_peers()
    except PeersMissing as missing:
        raise WorkloadError(str(missing)) from None
    example_dir = find_example_dir()
    env = {
        "GRANTBOX_DEMO_TRUST_DOMAIN": identity.trust_domain,
        "GRANTBOX_DEMO_BUNDLE_URL": f"{identity.oidc_url}/bundle",
    }
    try:
        with running_keycloak(
            peers.keycloak_home,
            work,
            realm_files=[example_dir / REALM_FILE],
            env=env,
            ready_realm=REALM,
            timeout=ready_timeout,
        ) as keycloak:
            started: list[WorkloadProcess] = []
            try:
                for name in SERVICES:
                    argv = keycloak_service_argv(
                        python, example_dir, name, ports.of(name), keycloak
                    )
                    service = WorkloadProcess(
                        name, argv, log_dir / f"{name}.log", env=workload_environment()
                    )
                    service.start()
                    started.append(service)
                for service in started:
                    service.wait_ready(30.0)
                yield KeycloakServices(keycloak, started[0], started[1])
            finally:
                for service in reversed(started):
                    service.stop()
    except KeycloakError as exc:
        raise WorkloadError(str(exc).splitlines()[0]) from None
