"""Session-wide real peers: SPIRE (server, agent, OIDC Discovery Provider), two local identity
agents (``grantbox identity serve``), and ONE Keycloak that trusts both identity sources.

Keycloak is slow to start on two cores, so everything that needs it shares this session's
server; tests that change shared state (stop the SPIRE agent, delete an entry) put it back.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from grantbox.demo.keycloak import Keycloak, running_keycloak
from grantbox.demo.peers import Peers
from tests.support.peers import Daemon, Entry, Spire, built_peers, running_spire

HERE = Path(__file__).resolve().parent
REALM_FILE = HERE / "grantbox-realm.json"
REALM = "grantbox"
GRANTBOX = Path(sys.executable).parent / "grantbox"

SPIRE_WORKLOAD_ID = "spiffe://spire.test/workload/proxy"
LOCAL_TRUST_DOMAIN = "local.test"
LOCAL_WORKLOAD_PATH = "/grantbox/sandbox/s1"
LOCAL_WORKLOAD_ID = f"spiffe://{LOCAL_TRUST_DOMAIN}{LOCAL_WORKLOAD_PATH}"
UNKNOWN_WORKLOAD_ID = f"spiffe://{LOCAL_TRUST_DOMAIN}/grantbox/sandbox/nobody"
STRANGER_TRUST_DOMAIN = "stranger.test"
STRANGER_WORKLOAD_ID = f"spiffe://{STRANGER_TRUST_DOMAIN}{LOCAL_WORKLOAD_PATH}"


@dataclass
class LocalAgent:
    """``grantbox identity serve`` as a process: workload ``s1`` (and ``nobody``)."""

    daemon: Daemon
    socket_dir: Path
    state_dir: Path
    trust_domain: str
    oidc_url: str
    bundle_url: str

    def socket(self, workload: str) -> Path:
        return self.socket_dir / workload / "agent.sock"


@contextlib.contextmanager
def running_local_agent(trust_domain: str) -> Iterator[LocalAgent]:
    root = Path(tempfile.mkdtemp(prefix="gbx-ida-", dir="/tmp"))
    daemon = Daemon(
        f"identity agent {trust_domain}",
        [
            str(GRANTBOX),
            "identity",
            "serve",
            "--socket-dir",
            str(root / "sockets"),
            "--state-dir",
            str(root / "state"),
            "--trust-domain",
            trust_domain,
            "--oidc-listen",
            "127.0.0.1:0",
            "--workload",
            f"s1={LOCAL_WORKLOAD_PATH}",
            "--workload",
            "nobody=/grantbox/sandbox/nobody",
        ],
        root / "agent.log",
    )
    try:
        daemon.start()
        found: dict[str, str] = {}

        def announced() -> bool:
            text = daemon.log_path.read_text(errors="replace")
            match = re.search(r"spiffe bundle endpoint: (http://\S+)", text)
            if match:
                found["bundle"] = match.group(1)
            return bool(match)

        daemon.wait_until(announced, "bundle endpoint announcement", timeout=60)
        bundle = found["bundle"]
        yield LocalAgent(
            daemon,
            root / "sockets",
            root / "state",
            trust_domain,
            bundle.removesuffix("/bundle"),
            bundle,
        )
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def peers() -> Peers:
    return built_peers()


@dataclass
class SpireSetup:
    spire: Spire
    entry: Entry

    def restore_entry(self) -> None:
        """Put the proxy's entry back if a test deleted it, and wait until it is served."""
        if not any(e["id"] == self.entry.id for e in self.spire.server.entries()):
            self.entry = self.spire.server.create_entry(SPIRE_WORKLOAD_ID, self.entry.selectors)
        self.spire.agent.wait_for_identity(SPIRE_WORKLOAD_ID)


@pytest.fixture(scope="session")
def spire(peers: Peers) -> Iterator[SpireSetup]:
    """SPIRE with one entry: whatever runs as root here (the proxy, the test) is
    ``spiffe://spire.test/workload/proxy``."""
    with running_spire(peers) as running:
        entry = running.server.create_entry(SPIRE_WORKLOAD_ID, ["unix:uid:0"])
        running.agent.wait_for_identity(SPIRE_WORKLOAD_ID)
        yield SpireSetup(running, entry)


@pytest.fixture(scope="session")
def local_agent() -> Iterator[LocalAgent]:
    with running_local_agent(LOCAL_TRUST_DOMAIN) as agent:
        yield agent


@pytest.fixture(scope="session")
def stranger_agent() -> Iterator[LocalAgent]:
    """An identity agent of a trust domain Keycloak does not trust."""
    with running_local_agent(STRANGER_TRUST_DOMAIN) as agent:
        yield agent


@pytest.fixture(scope="session")
def keycloak(peers: Peers, spire: SpireSetup, local_agent: LocalAgent) -> Iterator[Keycloak]:
    """Keycloak with realm ``grantbox`` (tests/interop/grantbox-realm.json): SPIFFE identity
    providers ``spire`` (keys from SPIRE's OIDC Discovery Provider) and ``local`` (our
    agent's SPIFFE bundle endpoint), and a federated-jwt client per workload."""
    work = Path(tempfile.mkdtemp(prefix="gbx-kc-"))
    env = {
        "GBX_SPIRE_BUNDLE_URL": spire.spire.oidc.keys_url,
        "GBX_LOCAL_BUNDLE_URL": local_agent.bundle_url,
    }
    try:
        with running_keycloak(
            peers.keycloak_home, work, realm_files=[REALM_FILE], env=env, ready_realm=REALM
        ) as server:
            yield server
    finally:
        shutil.rmtree(work, ignore_errors=True)


def curl_through(proxy: str, url: str, timeout: float = 30.0) -> tuple[int, str]:
    """``curl -x proxy url``: the status and body the client saw."""
    done = subprocess.run(
        ["curl", "-sS", "-x", proxy, "-m", str(int(timeout)), "-w", "\n%{http_code}", url],
        capture_output=True,
        text=True,
        timeout=timeout + 5,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status or 0), body
