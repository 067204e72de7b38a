"""A sandbox pod, end to end, with this test playing the kubelet.

Real parts: the gateway with the kubernetes driver, FakeKubeApiServer (the only stand-in),
the local identity agent (in place of SPIRE), a verifying token endpoint and an upstream.
When the driver has created the Pod and Secret, the test runs the Pod's container with runc
exactly as specified (command line, environment, capabilities, read-only root, seccomp),
mounting the Secret's token at the Pod's token path and the workload's identity socket
directory at the Pod's socket directory (as the SPIFFE CSI driver would). The agent's
``curl`` must come out at the upstream with a token granted for
``spiffe://example.org/grantbox/sandbox/<id>``; delete must remove the Pod and Secret.

The sandbox's policy sets ``limits``: the Pod reserves them (plus the supervisor's share) in
its ``resources``, and inside the container the supervisor applies them to the agent with
the same launch code as on one host, together with seccomp, the minimal root and Landlock.
The agent reports what it sees; the test reads the agent's cgroup bounds from the host
(runc here does not apply the Pod's ``resources``: that is the kubelet's part).

Differences from a cluster: the container shares the host's network namespace (no CNI), so
``/etc/hosts`` inside it points the gateway's and upstream's names at loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client

from grantbox.drivers.kubernetes import TOKEN_DIR, KubernetesDriver
from grantbox.identity_agent.registry import SOCKET_FILE
from grantbox.sandbox.limits import find_layout
from tests.support.fake_kube_api import FakeKubeApiServer, running_fake_kube_api
from tests.support.gateway_server import GatewayCli, gateway_settings, serving
from tests.support.identity_agent import running_agent
from tests.support.kube_runc import DEFAULT_SECCOMP, bind, container_config, runc_argv
from tests.support.proxy_upstream import running_upstream
from tests.support.token_endpoint import running_token_endpoint

from .conftest import NAMESPACE, make_config
from .test_pod_in_runc import needs_runc, runc_template

pytestmark = [*needs_runc, pytest.mark.slow]

RUNC = shutil.which("runc")
SOCKET_DIR = "/run/spire-agent-test"  # where the "CSI volume" appears in the container
GATEWAY_HOST = "grantbox-gateway.test"
ALPHA = "alpha.localhost"  # a loopback name: cleartext grants are allowed to it
WORKLOAD = "sandbox-pod"


# The agent reports what it can see of the supervisor's secrets in each request's query,
# and whether the fence the supervisor builds inside the pod holds there too: its seccomp
# filter, a root with no /run (or anything else of the image beyond the system), and the
# policy's limits: a grantbox cgroup, or (where the container may not make one) the
# rlimits on processes and data (KiB).
AGENT = f"""
token=$(ls -A {TOKEN_DIR}/..data/ 2>/dev/null | wc -l)
socket=$(ls -A {SOCKET_DIR}/ 2>/dev/null | wc -l)
env=$(env | grep -c -e SPIFFE_ -e GRANTBOX_)
seccomp=$(grep -c '^Seccomp:.2' /proc/self/status)
run=$(ls -d /run /opt /srv 2>/dev/null | wc -l)
limits="cgroup=$(grep -c grantbox- /proc/self/cgroup)&nproc=$(ulimit -u)&data=$(ulimit -d)"
while :; do
  curl -s -o /dev/null \\
    "URL?token=$token&socket=$socket&env=$env&seccomp=$seccomp&run=$run&$limits"
  sleep 0.2
done
"""
# The sandbox's own bounds (the policy's ``limits``), enforced by the supervisor in the pod.
LIMITS = {"processes": 64, "memory_mib": 256, "cpus": 0.5}


def agent_cgroup_limits(marker: str) -> dict[str, float]:
    """The bounds of the grantbox cgroup the agent (a process whose command line holds
    ``marker``) runs in, read from the host's cgroup files (v1 controllers or v2)."""
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or marker.encode() not in (entry / "cmdline").read_bytes():
                continue
            own = (entry / "cgroup").read_text()
        except OSError:
            continue
        if "grantbox-" not in own:
            continue
        layout = find_layout(mountinfo, own)
        if layout.v1:
            quota = int(Path(layout.v1["cpu"], "cpu.cfs_quota_us").read_text())
            period = int(Path(layout.v1["cpu"], "cpu.cfs_period_us").read_text())
            memory = int(Path(layout.v1["memory"], "memory.limit_in_bytes").read_text())
            processes = Path(layout.v1["pids"], "pids.max").read_text()
        else:
            assert layout.v2 is not None
            quota, period = map(int, Path(layout.v2, "cpu.max").read_text().split())
            memory = int(Path(layout.v2, "memory.max").read_text())
            processes = Path(layout.v2, "pids.max").read_text()
        return {
            "processes": int(processes),
            "memory_mib": memory // (1024 * 1024),
            "cpus": quota / period,
        }
    raise AssertionError(f"no process with {marker!r} in a grantbox cgroup")


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def kubelet_runs(
    pod: dict[str, Any], secret: dict[str, Any], workdir: Path, socket_dir: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start the Pod's container with runc; SIGTERM it (as the kubelet would) at the end."""
    assert RUNC is not None
    # The kubelet's layout of a Secret volume: token -> ..data/token, ..data -> ..<time>/
    token_dir = workdir / "secret-volume"
    payload = token_dir / "..2026_11_29_09_00_00.000000001"
    payload.mkdir(parents=True)
    token_dir.chmod(0o755)
    payload.chmod(0o755)
    (payload / "token").write_bytes(base64.b64decode(secret["data"]["token"]))
    (payload / "token").chmod(0o400)
    (token_dir / "..data").symlink_to(payload.name)
    (token_dir / "token").symlink_to("..data/token")
    hosts = workdir / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {GATEWAY_HOST} {ALPHA}\n")
    bundle, rootfs = workdir / "bundle", workdir / "rootfs"
    bundle.mkdir()
    rootfs.mkdir()
    config = container_config(
        runc_template(bundle),
        pod,
        rootfs=rootfs,
        seccomp_profile=json.loads(DEFAULT_SECCOMP.read_text()),
        mounts=[
            bind(token_dir, TOKEN_DIR),
            bind(socket_dir, SOCKET_DIR),
            bind(hosts, "/etc/hosts"),
        ],
        path=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        own_network=False,
    )
    (bundle / "config.json").write_text(json.dumps(config))
    container_id = f"gbx-pod-{os.getpid()}"
    process = await asyncio.create_subprocess_exec(
        *runc_argv(RUNC, rootfs, workdir / "state", bundle, container_id, private_run=True),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(Exception):
            delete = await asyncio.create_subprocess_exec(
                RUNC, "--root", str(workdir / "state"), "delete", "--force", container_id,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await delete.wait()


async def test_sandbox_pod_gets_a_token_from_its_spiffe_identity(tmp_path: Path) -> None:
    async with (
        running_agent(tmp_path, oidc=True) as agent,
        running_token_endpoint(oidc_url=agent.oidc_url, trust_domain="example.org") as issuer,
        running_upstream() as upstream,
    ):
        with running_fake_kube_api() as fake_api:
            await _run(tmp_path, agent, issuer, upstream, fake_api)


async def _run(
    tmp_path: Path, agent: Any, issuer: Any, upstream: Any, fake_api: FakeKubeApiServer
) -> None:
    config = make_config(socket_path=f"{SOCKET_DIR}/{SOCKET_FILE}", read_only_root=True)
    driver = KubernetesDriver(config, client.Configuration(host=fake_api.url))
    with serving(gateway_settings(tmp_path), driver) as server:
        server._server.config.timeout_graceful_shutdown = 1
        port = int(server.url.rsplit(":", 1)[1])
        driver.config = replace(config, gateway_url=f"http://{GATEWAY_HOST}:{port}")
        gw = GatewayCli(server.url, server.operator_token, tmp_path)
        endpoint = {"host": ALPHA, "port": upstream.port, "allowed_ips": ["127.0.0.1"]}
        profile = {
            "id": "alpha",
            "credentials": [
                {
                    "name": "access_token",
                    "required": True,
                    "auth_style": "bearer",
                    "token_grant": {
                        "token_endpoint": issuer.token_url,
                        "jwt_svid_audience": issuer.issuer,
                        "client_assertion_type": (
                            "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
                        ),
                        "audience": "alpha",
                    },
                }
            ],
            "endpoints": [endpoint],
        }
        await asyncio.to_thread(gw.ok, "profile", "import", "-f", gw.write("alpha.yaml", profile))
        await asyncio.to_thread(
            gw.ok, "provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials"
        )
        url = f"http://{ALPHA}:{upstream.port}/from-the-pod"
        policy = gw.write("policy.yaml", {"limits": LIMITS})
        created = await asyncio.to_thread(
            gw.json, "sandbox", "create", "--name", "box", "--provider", "pa",
            "--policy", policy, "--", "sh", "-c", AGENT.replace("URL", url),
        )  # fmt: skip
        sandbox_id = created["id"]
        name = f"grantbox-sandbox-{sandbox_id}"
        pod = fake_api.objects("pods", NAMESPACE)[name]
        # The pod reserves the sandbox's memory and CPU, plus the supervisor's share.
        reserved = {"cpu": "750m", "memory": "512Mi"}
        resources = pod["spec"]["containers"][0]["resources"]
        assert resources == {"requests": reserved, "limits": reserved}
        secret = fake_api.objects("secrets", NAMESPACE)[name]
        # SPIRE's part: the ClusterSPIFFEID would give this pod its id (here: one workload).
        socket = agent.add_workload(WORKLOAD, f"grantbox/sandbox/{sandbox_id}")
        assert socket.name == SOCKET_FILE

        async with kubelet_runs(pod, secret, tmp_path / "kubelet", socket.parent) as container:
            fake_api.set_pod_status(
                NAMESPACE,
                name,
                {
                    "phase": "Running",
                    "containerStatuses": [{"name": "supervisor", "state": {"running": {}}}],
                },
            )

            def authorized() -> bool:
                if container.returncode is not None:
                    raise AssertionError(f"the container exited with {container.returncode}")
                return any(
                    r.target.startswith("/from-the-pod") and r.header("authorization")
                    for r in upstream.requests
                )

            try:
                await until(authorized, 60, "an authorized request from the pod's agent")
            except AssertionError:
                output = b""
                if container.stdout is not None:
                    with contextlib.suppress(TimeoutError):
                        output = await asyncio.wait_for(container.stdout.read(65536), 2)
                raise AssertionError(output.decode(errors="replace")) from None
            first = next(r for r in upstream.requests if r.header("authorization"))
            # Nothing of the Secret volume's files, the socket directory or the
            # supervisor's environment is visible to the agent; seccomp, the minimal root
            # and the policy's limits (Landlock too: the same launch code) hold in the pod.
            path, _, query = first.target.partition("?")
            seen = dict(item.split("=", 1) for item in query.split("&"))
            assert path == "/from-the-pod"
            assert {k: seen[k] for k in ("token", "socket", "env", "seccomp", "run")} == {
                "token": "0", "socket": "0", "env": "0", "seccomp": "1", "run": "0"
            }  # fmt: skip
            if seen["cgroup"] != "0":
                # Seen from the host: the agent's group holds the policy's bounds.
                assert agent_cgroup_limits("from-the-pod") == {
                    "processes": LIMITS["processes"],
                    "memory_mib": LIMITS["memory_mib"],
                    "cpus": LIMITS["cpus"],
                }
            else:  # no cgroup in this container: rlimits per process (CPU unbounded)
                assert (seen["nproc"], seen["data"]) == ("64", str(256 * 1024)), seen
            assert first.header("authorization") == [f"Bearer {issuer.issued[-1]}"]
            assert issuer.subjects[-1] == f"spiffe://example.org/grantbox/sandbox/{sandbox_id}"
            await until(
                lambda: gw.json("sandbox", "get", "box")["phase"] == "ready", 20, "phase ready"
            )
            await asyncio.to_thread(gw.ok, "sandbox", "delete", "box")
            assert fake_api.objects("pods", NAMESPACE) == {}
            assert fake_api.objects("secrets", NAMESPACE) == {}
        assert container.returncode is not None
