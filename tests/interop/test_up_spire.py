"""``grantbox up`` with an external SPIRE: each sandbox's supervisor gets its own SPIFFE ID
from SPIRE (one registration entry per sandbox, told apart by the gid reserved for its
supervisor), proven end to end by the token the sandbox's request carries; a deleted
sandbox's entry is gone, and stopping ``up`` removes the rest."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from grantbox.demo import (
    DemoPorts,
    IdentitySettings,
    Operator,
    curl_argv,
    find_example_dir,
    parse_curl_output,
    running_workloads,
    service_claims,
)
from grantbox.demo.embedded import DemoDirectories
from grantbox.demo.flow import sandbox_spiffe_id, service_url
from grantbox.demo.operator import grantbox_command
from grantbox.demo.peers import Peers
from grantbox.demo.run import profile_for_ports
from tests.support.peers import NODE_ALIAS, Spire, running_spire

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root here"),
]

TRUST_DOMAIN = "spire.test"
SANDBOX_PREFIX = f"spiffe://{TRUST_DOMAIN}/grantbox/sandbox/"


@pytest.fixture
def own_spire(peers: Peers) -> Iterator[Spire]:
    """A SPIRE of its own: the session's has an entry for every root process. Its sockets
    live below /srv, which a sandbox's file system view shows (its /tmp and /var/tmp are
    private), so hiding them is really tested."""
    with running_spire(peers, base="/srv") as spire:
        yield spire


def sandbox_entries(spire: Spire) -> dict[str, dict[str, Any]]:
    """SPIFFE ID → entry, for the entries grantbox made."""
    found = {}
    for entry in spire.server.entries():
        spiffe_id = entry["spiffe_id"]
        name = f"spiffe://{spiffe_id['trust_domain']}{spiffe_id['path']}"
        if name.startswith(SANDBOX_PREFIX):
            found[name] = entry
    return found


def gid_of(entry: dict[str, Any]) -> str:
    (gid,) = [s["value"] for s in entry["selectors"] if s["value"].startswith("gid:")]
    return str(gid)


class Up:
    def __init__(self, argv: list[str], directories: DemoDirectories) -> None:
        self.directories = directories
        self.log = directories.logs / "up.log"
        directories.logs.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                env=directories.environment(), start_new_session=True,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while "ready: " not in (text := self.log.read_text(errors="replace")):
            assert self.process.poll() is None, f"grantbox up exited:\n{text[-3000:]}"
            assert time.monotonic() < deadline, f"grantbox up not ready:\n{text[-3000:]}"
            time.sleep(0.2)
        return text

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


def wait_ready(operator: Operator, name: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = operator.json("sandbox", "get", name)
        if state.get("phase") == "ready":
            return str(state["id"])
        assert state.get("phase") != "error", state
        assert time.monotonic() < deadline, state
        time.sleep(0.5)


def claims_seen_by_alpha(operator: Operator, sandbox: str, ports: DemoPorts) -> dict[str, Any]:
    """curl alpha inside the sandbox until it answers 200 (SPIRE syncs a new entry to its
    agent within seconds); the claims of the token alpha verified."""
    command = curl_argv(service_url("alpha", ports), 10)
    probe = None
    for _ in range(20):
        probe = parse_curl_output(operator.exec_in(sandbox, command, 20).stdout)
        if probe.status == 200:
            return service_claims(probe.body)
        time.sleep(2)
    raise AssertionError(f"alpha never answered 200 to {sandbox}: {probe}")


def test_sandboxes_get_their_own_spiffe_ids_from_spire(
    peers: Peers, own_spire: Spire, tmp_path: Path
) -> None:
    spire = own_spire
    directories = DemoDirectories(tmp_path / "up")
    identity = IdentitySettings(oidc_url=spire.oidc.url, trust_domain=TRUST_DOMAIN)
    with running_workloads(identity, tmp_path / "logs", ports=DemoPorts.any()) as workloads:
        ports = DemoPorts(*(int(w.url.rsplit(":", 1)[1]) for w in workloads.all()))
        original = yaml.safe_load((find_example_dir() / "provider-profile.yaml").read_text())
        profile = tmp_path / "profile.yaml"
        profile.write_text(yaml.safe_dump(profile_for_ports(original, ports, workloads.issuer_url)))
        up = Up(
            [
                *grantbox_command(), "up", "--listen", "127.0.0.1:0",
                "--trust-domain", TRUST_DOMAIN,
                "--spire-server-socket", str(spire.server.socket),
                "--spire-agent-socket", str(spire.agent.socket),
                "--spire-parent-id", NODE_ALIAS,
                "--spire-server-command", str(peers.spire_server),
            ],
            directories,
        )  # fmt: skip
        try:
            text = up.wait_ready()
            assert re.search(r"identity: SPIRE, spiffe://spire\.test/grantbox/sandbox/", text)
            operator = Operator(directories.environment())
            operator.run("profile", "import", "-f", str(profile))
            operator.run(
                "provider", "create", "--name", "demo", "--type", original["id"],
                "--runtime-credentials",
            )  # fmt: skip
            ids = {}
            for name in ("one", "two"):
                operator.json(
                    "sandbox", "create", "--name", name, "--provider", "demo",
                    "--", "sleep", "infinity",
                )  # fmt: skip
                ids[name] = wait_ready(operator, name)
            wanted = {name: sandbox_spiffe_id(TRUST_DOMAIN, ids[name]) for name in ids}
            entries = sandbox_entries(spire)
            assert set(entries) == set(wanted.values())
            assert gid_of(entries[wanted["one"]]) != gid_of(entries[wanted["two"]])
            for entry in entries.values():
                assert {"type": "unix", "value": "uid:0"} in entry["selectors"]
                assert entry["jwt_svid_ttl"] == 300

            for name in ("one", "two"):  # each request carries a token for its own identity
                claims = claims_seen_by_alpha(operator, name, ports)
                assert claims["azp"] == wanted[name] == claims["sub"]
            assert workloads.issuer_stats()["issued"] >= 2
            for hidden in (spire.agent.socket, spire.server.socket):  # DESIGN §3.5 #1
                seen = operator.exec_in("two", ["ls", "-la", str(hidden.parent)], 20)
                assert hidden.name not in seen.stdout, seen.stdout
                looked = operator.exec_in("two", ["test", "-S", str(hidden)], 20)
                assert looked.code != 0

            operator.run("sandbox", "delete", "one")
            assert set(sandbox_entries(spire)) == {wanted["two"]}
        finally:
            code = up.stop()
        assert code == 0, up.log.read_text()[-3000:]
    assert sandbox_entries(spire) == {}  # stopping up removed the last entry too
