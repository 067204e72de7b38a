"""The sandbox pod's container settings, run by a real OCI runtime (runc) on this machine.

The OCI config is derived from the Pod the driver builds: its added capabilities (and
nothing else), ``runAsUser``, ``readOnlyRootFilesystem``, ``seccompProfile: RuntimeDefault``
(here: the containers-common default profile, which is CRI-O's RuntimeDefault; containerd's, derived
from Docker's, allows the same namespace and mount calls once CAP_SYS_ADMIN is present),
runc's default masked and read-only paths, and a read-only bind mount standing in for the
SPIFFE CSI volume. Inside, the real isolation code builds a
sandbox. Not covered: AppArmor (this kernel has none), cgroups, the kubelet, the CSI driver.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from grantbox.gateway.kubernetes_driver import pod_manifest

from .conftest import make_config, make_spec

ROOT = Path(__file__).resolve().parents[2]
RUNC = shutil.which("runc")
DEFAULT_SECCOMP = Path("/usr/share/containers/seccomp.json")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(RUNC is None, reason="needs runc (Debian package runc)"),
    pytest.mark.skipif(
        not DEFAULT_SECCOMP.is_file(),
        reason="needs the default seccomp profile (golang-github-containers-common)",
    ),
]

_ARCH = {"x86_64": ("SCMP_ARCH_X86_64", "amd64"), "aarch64": ("SCMP_ARCH_AARCH64", "arm64")}


def runtime_default_seccomp(profile: dict[str, Any], caps: list[str]) -> dict[str, Any]:
    """Turn a Docker-format default profile into OCI form for these capabilities, the way
    container runtimes do: rules guarded by capabilities apply only when the container has
    them."""
    scmp_arch, go_arch = _ARCH[platform.machine()]
    arches = [scmp_arch]
    for entry in profile.get("archMap", []):
        if entry["architecture"] == scmp_arch:
            arches += entry.get("subArchitectures", [])
    rules = []
    for rule in profile["syscalls"]:
        includes, excludes = rule.get("includes", {}), rule.get("excludes", {})
        if includes.get("caps") and not set(includes["caps"]) <= set(caps):
            continue
        if excludes.get("caps") and set(excludes["caps"]) & set(caps):
            continue
        if includes.get("arches") and go_arch not in includes["arches"]:
            continue
        if excludes.get("arches") and go_arch in excludes["arches"]:
            continue
        converted = {"names": rule["names"], "action": rule["action"]}
        for key in ("args", "errnoRet"):
            if rule.get(key) is not None:
                converted[key] = rule[key]
        rules.append(converted)
    seccomp = {
        "defaultAction": profile["defaultAction"],
        "architectures": arches,
        "syscalls": rules,
    }
    if profile.get("defaultErrnoRet") is not None:
        seccomp["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return seccomp


def build_config(
    template: dict[str, Any], pod: dict[str, Any], rootfs: Path, hidden: Path
) -> dict[str, Any]:
    container = pod["spec"]["containers"][0]
    context = container["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    caps = [f"CAP_{name}" for name in context["capabilities"]["add"]]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    config = dict(template)
    config["root"] = {"path": str(rootfs), "readonly": context["readOnlyRootFilesystem"]}
    config["process"] = {
        **template["process"],
        "terminal": False,
        "user": {"uid": context["runAsUser"], "gid": context["runAsGroup"]},
        "args": [sys.executable, "-m", "tests.support.kube_capability_probe", "agent", str(hidden)],
        "cwd": str(ROOT),
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        # allowPrivilegeEscalation is unset in the pod, so runtimes leave no_new_privs off.
        "noNewPrivileges": "allowPrivilegeEscalation" in context
        and not context["allowPrivilegeEscalation"],
        "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
    }
    # The CSI volume stand-in: mounted read-only, as the pod mounts the Workload API socket.
    mounts = [m for m in template["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    mounts.append(
        {
            "destination": str(hidden),
            "type": "bind",
            "source": str(hidden),
            "options": ["rbind", "ro"],
        }
    )
    config["mounts"] = mounts
    linux = dict(template["linux"])
    linux.pop("resources", None)
    linux["seccomp"] = runtime_default_seccomp(json.loads(DEFAULT_SECCOMP.read_text()), caps)
    linux["namespaces"] = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
    config["linux"] = linux
    return config


def test_sandbox_builds_inside_the_pods_container_settings(tmp_path: Path) -> None:
    assert RUNC is not None
    hidden = tmp_path / "spiffe-workload-api"
    hidden.mkdir()
    (hidden / "secret").write_text("not for the agent\n")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    subprocess.run([RUNC, "spec", "--bundle", str(bundle)], check=True)
    template = json.loads((bundle / "config.json").read_text())
    pod = pod_manifest(make_spec(), make_config())
    config = build_config(template, pod, tmp_path / "rootfs", hidden)
    (bundle / "config.json").write_text(json.dumps(config))
    (tmp_path / "rootfs").mkdir()
    # The host's root, read-only inside the container, bound in a private mount namespace
    # so nothing of this is visible outside the test.
    script = (
        'mount --make-rprivate / && mount --rbind / "$1" && '
        'exec "$2" --root "$3" run --bundle "$4" "$5"'
    )
    result = subprocess.run(
        [
            "unshare", "--mount", "--", "/bin/sh", "-ec", script, "sh",
            str(tmp_path / "rootfs"), RUNC, str(tmp_path / "state"), str(bundle),
            f"grantbox-test-{os.getpid()}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
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
