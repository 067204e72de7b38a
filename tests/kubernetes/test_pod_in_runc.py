"""The sandbox pod's container settings, run by a real OCI runtime (runc) on this machine.

The OCI config comes from the Pod the driver builds (``tests.support.kube_runc``): its
added capabilities and nothing else, root user, read-only root filesystem,
``seccompProfile: RuntimeDefault`` (the containers-common default profile, which is CRI-O's
RuntimeDefault; containerd's, derived from Docker's, allows the same namespace and mount
calls once CAP_SYS_ADMIN is present), runc's default masked and read-only paths, and a
read-only bind mount standing in for the SPIFFE CSI volume. Inside, the real isolation code
builds a sandbox. Not covered: AppArmor (this kernel has none), cgroups, kubelet, CSI driver.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grantbox.drivers.kubernetes import pod_manifest
from tests.support.kube_runc import DEFAULT_SECCOMP, bind, container_config, runc_argv

from .conftest import make_config, make_spec

ROOT = Path(__file__).resolve().parents[2]
RUNC = shutil.which("runc")

needs_runc = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(RUNC is None, reason="needs runc (Debian package runc)"),
    pytest.mark.skipif(
        not DEFAULT_SECCOMP.is_file(),
        reason="needs the default seccomp profile (golang-github-containers-common)",
    ),
]
pytestmark = needs_runc


def runc_template(bundle: Path) -> dict[str, object]:
    assert RUNC is not None
    subprocess.run([RUNC, "spec", "--bundle", str(bundle)], check=True)
    template: dict[str, object] = json.loads((bundle / "config.json").read_text())
    return template


def test_sandbox_builds_inside_the_pods_container_settings(tmp_path: Path) -> None:
    assert RUNC is not None
    hidden = tmp_path / "spiffe-workload-api"
    hidden.mkdir()
    (hidden / "secret").write_text("not for the agent\n")
    bundle, rootfs = tmp_path / "bundle", tmp_path / "rootfs"
    bundle.mkdir()
    rootfs.mkdir()
    config = container_config(
        runc_template(bundle),
        pod_manifest(make_spec(), make_config()),
        rootfs=rootfs,
        seccomp_profile=json.loads(DEFAULT_SECCOMP.read_text()),
        mounts=[bind(hidden, str(hidden))],
        args=[sys.executable, "-m", "tests.support.kube_capability_probe", "agent", str(hidden)],
        cwd=str(ROOT),
    )
    (bundle / "config.json").write_text(json.dumps(config))
    argv = runc_argv(
        RUNC, rootfs, tmp_path / "state", bundle, f"gbx-probe-{os.getpid()}", private_run=False
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["stage"] == "agent", report
    assert report["code"] == 0, report
    assert report["root_writable"] is False
    lines = report["out"].splitlines()
    assert lines[0] == "uid=65534"
    assert lines[1].split() == ["CapEff:", "0000000000000000"]
    assert lines[2].split() == ["lo"]
    assert lines[3] == "hidden"
