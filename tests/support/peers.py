"""Real SPIRE for tests: a server, an agent and the OIDC Discovery Provider on loopback.

The binaries are the ones ``make peers`` built (see :mod:`grantbox.demo.peers`); when they
are missing the test fails and says to run it, because a skipped interop test proves
nothing. Every process gets its own short directory under /tmp (unix socket paths are
short), free loopback ports, and is stopped (its whole process group) on exit.

Node attestation is a join token; workloads are attested by the ``unix`` plugin, so an
entry's selectors are the caller's uid/gid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantbox.demo.keycloak import free_port
from grantbox.demo.peers import Peers, PeersMissing, load_peers

SPIRE_TRUST_DOMAIN = "spire.test"
NODE_ALIAS = f"spiffe://{SPIRE_TRUST_DOMAIN}/host"


def built_peers() -> Peers:
    try:
        return load_peers()
    except PeersMissing as missing:
        pytest.fail(str(missing), pytrace=False)


class Daemon:
    """A long-running peer process with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, count: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-count:])
        return ""

    def stop(self, grace: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def wait_until(self, ready: Any, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.running:
                raise AssertionError(f"{self.name} exited before {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no {what} after {timeout:g} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)


def run(argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Entry:
    id: str
    spiffe_id: str
    selectors: tuple[str, ...]


class SpireServer:
    def __init__(self, peers: Peers, root: Path, trust_domain: str = SPIRE_TRUST_DOMAIN) -> None:
        self.peers = peers
        self.root = root
        self.trust_domain = trust_domain
        self.socket = root / "server" / "api.sock"
        self.port = 0
        self.daemon: Daemon | None = None

    def config(self) -> str:
        data = self.root / "server" / "data"
        return f"""
server {{
  bind_address = "127.0.0.1"
  bind_port = "{self.port}"
  socket_path = "{self.socket}"
  trust_domain = "{self.trust_domain}"
  data_dir = "{data}"
  log_level = "INFO"
  default_jwt_svid_ttl = "5m"
}}
plugins {{
  DataStore "sql" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{data}/datastore.sqlite3"
    }}
  }}
  KeyManager "disk" {{
    plugin_data {{ keys_path = "{data}/keys.json" }}
  }}
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
}}
"""

    def start(self) -> None:
        (self.root / "server" / "data").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.root / "server.conf"
        conf.write_text(self.config())
        self.daemon = Daemon(
            "spire-server",
            [str(self.peers.spire_server), "run", "-config", str(conf)],
            self.root / "server.log",
        )
        self.daemon.start()
        self.daemon.wait_until(self.healthy, "health")

    def healthy(self) -> bool:
        return self.cli("healthcheck").returncode == 0

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command, *rest = args
        sub = command.split()
        return run([str(self.peers.spire_server), *sub, "-socketPath", str(self.socket), *rest])

    def checked(self, *args: str) -> str:
        done = self.cli(*args)
        assert done.returncode == 0, f"spire-server {' '.join(args)}: {done.stderr}{done.stdout}"
        return done.stdout

    def bundle_pem(self) -> str:
        return self.checked("bundle show")

    def join_token(self) -> str:
        out = self.checked("token generate", "-spiffeID", NODE_ALIAS, "-ttl", "600")
        return out.split("Token:", 1)[1].strip()

    def create_entry(self, spiffe_id: str, selectors: Sequence[str], jwt_ttl: int = 300) -> Entry:
        args = ["entry create", "-parentID", NODE_ALIAS, "-spiffeID", spiffe_id]
        for selector in selectors:
            args += ["-selector", selector]
        args += ["-jwtSVIDTTL", str(jwt_ttl), "-output", "json"]
        answer = json.loads(self.checked(*args))
        (result,) = answer["results"]
        return Entry(result["entry"]["id"], spiffe_id, tuple(selectors))

    def delete_entry(self, entry: Entry) -> None:
        self.checked("entry delete", "-entryID", entry.id)

    def entries(self) -> list[dict[str, Any]]:
        answer = json.loads(self.checked("entry show", "-output", "json"))
        found: list[dict[str, Any]] = answer.get("entries") or []
        return found

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


class SpireAgent:
    def __init__(self, server: SpireServer) -> None:
        self.server = server
        self.root = server.root
        self.socket = self.root / "agent" / "api.sock"
        self.daemon: Daemon | None = None

    def start(self) -> None:
        data = self.root / "agent" / "data"
        data.mkdir(parents=True, exist_ok=True)
        bundle = self.root / "bundle.pem"
        bundle.write_text(self.server.bundle_pem())
        conf = self.root / "agent.conf"
        conf.write_text(
            f"""
agent {{
  data_dir = "{data}"
  server_address = "127.0.0.1"
  server_port = "{self.server.port}"
  socket_path = "{self.socket}"
  trust_domain = "{self.server.trust_domain}"
  trust_bundle_path = "{bundle}"
  log_level = "INFO"
}}
plugins {{
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "memory" {{
    plugin_data {{}}
  }}
  WorkloadAttestor "unix" {{
    plugin_data {{}}
  }}
}}
"""
        )
        self.daemon = Daemon(
            "spire-agent",
            [
                str(self.server.peers.spire_agent),
                "run",
                "-config",
                str(conf),
                "-joinToken",
                self.server.join_token(),
            ],
            self.root / "agent.log",
        )
        self.daemon.start()
        self.daemon.wait_until(self.healthy, "health")

    def healthy(self) -> bool:
        done = run(
            [str(self.server.peers.spire_agent), "healthcheck", "-socketPath", str(self.socket)]
        )
        return done.returncode == 0

    def fetch_jwt(self, audience: str) -> subprocess.CompletedProcess[str]:
        """``spire-agent api fetch jwt`` as the calling (test) process's uid."""
        return run(
            [
                str(self.server.peers.spire_agent),
                "api",
                "fetch",
                "jwt",
                "-audience",
                audience,
                "-socketPath",
                str(self.socket),
                "-output",
                "json",
            ]
        )

    def wait_for_identity(self, spiffe_id: str, timeout: float = 60.0) -> None:
        """Poll until the agent has synced the entry and issues ``spiffe_id`` to us."""
        assert self.daemon is not None
        self.daemon.wait_until(
            lambda: spiffe_id in self.fetch_jwt("probe").stdout, f"SVID for {spiffe_id}", timeout
        )

    def wait_for_no_identity(self, timeout: float = 60.0) -> None:
        assert self.daemon is not None
        self.daemon.wait_until(
            lambda: self.fetch_jwt("probe").returncode != 0, "refusal without entry", timeout
        )

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    def restart(self) -> None:
        """A new agent process (memory key manager: it attests anew with a new join token)."""
        self.stop()
        shutil.rmtree(self.root / "agent" / "data", ignore_errors=True)
        self.start()


class OidcDiscoveryProvider:
    """SPIRE's OIDC Discovery Provider reading keys from the server API, on plain HTTP."""

    def __init__(self, server: SpireServer) -> None:
        self.server = server
        self.port = 0
        self.daemon: Daemon | None = None

    @property
    def url(self) -> str:
        # ``domains`` is checked against the Host header of the discovery request.
        return f"http://localhost:{self.port}"

    @property
    def keys_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/keys"

    def start(self) -> None:
        self.port = free_port()
        conf = self.server.root / "oidc.conf"
        conf.write_text(
            f"""
log_level = "info"
domains = ["localhost"]
insecure_addr = "127.0.0.1:{self.port}"
allow_insecure_scheme = true
set_key_use = true
server_api {{
  address = "unix://{self.server.socket}"
  poll_interval = "1s"
}}
"""
        )
        self.daemon = Daemon(
            "oidc-discovery-provider",
            [str(self.server.peers.oidc_discovery_provider), "-config", str(conf)],
            self.server.root / "oidc.log",
        )
        self.daemon.start()
        self.daemon.wait_until(self._serves_keys, "keys")

    def _serves_keys(self) -> bool:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = httpx.get(self.keys_url, timeout=2.0, trust_env=False)
            return answer.status_code == 200 and bool(answer.json().get("keys"))
        return False

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


@dataclass
class Spire:
    server: SpireServer
    agent: SpireAgent
    oidc: OidcDiscoveryProvider

    @property
    def trust_domain(self) -> str:
        return self.server.trust_domain


@contextlib.contextmanager
def running_spire(peers: Peers, base: str = "/tmp") -> Iterator[Spire]:
    """SPIRE under a new directory of ``base`` (short: unix socket paths are limited)."""
    root = Path(tempfile.mkdtemp(prefix="gbx-spire-", dir=base))
    root.chmod(0o755)  # as SPIRE is installed: the agent's socket is for every local process
    server = SpireServer(peers, root)
    agent = SpireAgent(server)
    oidc = OidcDiscoveryProvider(server)
    try:
        server.start()
        agent.start()
        oidc.start()
        yield Spire(server, agent, oidc)
    finally:
        oidc.stop()
        agent.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
