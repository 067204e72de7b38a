"""The sandbox pod's capability set, tried on this machine's kernel.

The container of a sandbox pod runs as root with ``drop: [ALL]`` plus
``SANDBOX_CAPABILITIES``. Here the real isolation code runs under ``setpriv`` with exactly
that bounding set: it must work with it, and fail (or lose a guarantee) without any one of
them. What this cannot show: the container runtime's seccomp and AppArmor profiles.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from grantbox.drivers.kubernetes import SANDBOX_CAPABILITIES

ROOT = Path(__file__).resolve().parents[2]
SETPRIV = shutil.which("setpriv")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux)"),
]


# What a container runtime sets up around the container (runc's defaults): a read-only
# root (readOnlyRootFilesystem), masked and read-only /proc paths. Run in a private mount
# namespace, so the host is untouched.
CONTAINER_MOUNTS = """
mount --make-rprivate /
mount -o remount,bind,ro /
for p in /proc/acpi /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list \
         /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware; do
  if [ -d "$p" ]; then mount -t tmpfs -o ro tmpfs "$p"
  elif [ -e "$p" ]; then mount --bind /dev/null "$p"; fi
done
for p in /proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger; do
  if [ -e "$p" ]; then mount --bind "$p" "$p" && mount -o remount,bind,ro "$p"; fi
done
exec "$@"
"""
CONTAINER_LIKE = ["unshare", "--mount", "--", "/bin/sh", "-ec", CONTAINER_MOUNTS, "sh"]


def run_with(
    capabilities: set[str], mode: str, hidden: Path, *, container_like: bool = False
) -> dict[str, Any]:
    assert SETPRIV is not None
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in sorted(capabilities))])
    result = subprocess.run(
        [
            *(CONTAINER_LIKE if container_like else []),
            SETPRIV,
            f"--bounding-set={bounding}",
            "--inh-caps=-all",
            "--",
            sys.executable,
            "-m",
            "tests.support.kube_capability_probe",
            mode,
            str(hidden),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture
def hidden(tmp_path: Path) -> Path:
    directory = tmp_path / "spiffe-workload-api"
    directory.mkdir()
    (directory / "secret").write_text("not for the agent\n")
    return directory


@pytest.mark.parametrize("container_like", [False, True], ids=["plain", "container-mounts"])
def test_the_pod_capabilities_are_enough(hidden: Path, container_like: bool) -> None:
    report = run_with(set(SANDBOX_CAPABILITIES), "agent", hidden, container_like=container_like)
    assert report["stage"] == "agent", report
    assert report["code"] == 0, report
    assert report["root_writable"] is not container_like
    lines = report["out"].splitlines()
    assert lines[0] == "uid=65534"
    assert lines[1].split() == ["CapEff:", "0000000000000000"]
    assert lines[2].split() == ["lo"]  # only loopback: the proxy is the way out
    assert lines[3] == "hidden"


@pytest.mark.parametrize(
    ("missing", "stage", "symptom"),
    [
        ("SYS_ADMIN", "network", "unshare: Operation not permitted"),  # no namespaces
        ("NET_ADMIN", "network", "Operation not permitted"),  # lo stays down
        # no drop to 65534: preparing the agent (setgroups/setresgid/setresuid) fails
        ("SETUID", "agent", "cannot prepare the agent: [Errno 1] Operation not permitted"),
        ("SETGID", "agent", "cannot prepare the agent: [Errno 1] Operation not permitted"),
    ],
)
def test_each_namespace_capability_is_needed(
    hidden: Path, missing: str, stage: str, symptom: str
) -> None:
    report = run_with(set(SANDBOX_CAPABILITIES) - {missing}, "agent", hidden)
    assert report["stage"] == stage, report
    assert symptom in (report.get("error") or report.get("err") or ""), report
    assert report.get("code") != 0


def test_kill_is_needed_to_relay_sigterm_to_the_agent(hidden: Path) -> None:
    with_kill = run_with(set(SANDBOX_CAPABILITIES), "sigterm", hidden)
    assert with_kill["code"] == 128 + 15, with_kill
    without_kill = run_with(set(SANDBOX_CAPABILITIES) - {"KILL"}, "sigterm", hidden)
    # init cannot signal the agent (another uid); it fails and the PID namespace dies.
    assert without_kill["code"] == 125, without_kill
    assert "Operation not permitted" in without_kill["err"]
