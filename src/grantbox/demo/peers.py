"""Where ``make peers`` (scripts/peers.sh) put the real SPIRE, Keycloak and Helm builds.

The script writes ``manifest.json`` into its cache (``.cache/peers`` in the checkout, or
``$GRANTBOX_PEERS_DIR``); the Keycloak demo and the interop tests read it from here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEERS_DIR_ENV = "GRANTBOX_PEERS_DIR"
CACHE_RELATIVE = Path(".cache") / "peers"
MANIFEST = "manifest.json"


class PeersMissing(Exception):
    """The peers are not built; the message says how to build them."""


@dataclass(frozen=True)
class Peers:
    spire_version: str
    spire_server: Path
    spire_agent: Path
    oidc_discovery_provider: Path
    helm_version: str
    helm: Path
    go_spiffe_version: str
    spiffe_check: Path
    controller_manager_version: str
    crds_dir: Path
    keycloak_version: str
    keycloak_home: Path


def peers_dir(start: Path | None = None) -> Path:
    """``$GRANTBOX_PEERS_DIR``, else ``.cache/peers`` of the checkout above this package."""
    override = os.environ.get(PEERS_DIR_ENV)
    if override:
        return Path(override)
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        if (parent / "scripts" / "peers.sh").is_file():
            return parent / CACHE_RELATIVE
    return Path.cwd() / CACHE_RELATIVE


def load_peers(directory: Path | None = None) -> Peers:
    """The built peers, every file checked to exist."""
    where = directory or peers_dir()
    try:
        data: dict[str, Any] = json.loads((where / MANIFEST).read_text())
    except (OSError, ValueError):
        raise PeersMissing(
            f"the real peers (SPIRE, Keycloak, Helm) are not built in {where}; "
            "run `make peers` (scripts/peers.sh) first"
        ) from None
    try:
        peers = Peers(
            spire_version=data["spire"]["version"],
            spire_server=Path(data["spire"]["server"]),
            spire_agent=Path(data["spire"]["agent"]),
            oidc_discovery_provider=Path(data["spire"]["oidc_discovery_provider"]),
            helm_version=data["helm"]["version"],
            helm=Path(data["helm"]["bin"]),
            go_spiffe_version=data["spiffe_check"]["go_spiffe_version"],
            spiffe_check=Path(data["spiffe_check"]["bin"]),
            controller_manager_version=data["crds"]["spire_controller_manager_version"],
            crds_dir=Path(data["crds"]["dir"]),
            keycloak_version=data["keycloak"]["version"],
            keycloak_home=Path(data["keycloak"]["home"]),
        )
    except (KeyError, TypeError):
        raise PeersMissing(f"{where / MANIFEST} is incomplete; run `make peers` again") from None
    for path in (
        peers.spire_server,
        peers.spire_agent,
        peers.oidc_discovery_provider,
        peers.helm,
        peers.spiffe_check,
        peers.crds_dir,
        peers.keycloak_home / "bin" / "kc.sh",
    ):
        if not path.exists():
            raise PeersMissing(f"{path} is missing; run `make peers` again")
    return peers
