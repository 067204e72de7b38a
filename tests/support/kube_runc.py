"""Run a sandbox Pod's container with runc, as a kubelet would, for tests.

:func:`container_config` derives an OCI runtime config from the Pod the kubernetes driver
builds: the command and arguments, the supervisor's environment, root user, exactly the
added capabilities, a read-only root filesystem, ``RuntimeDefault`` seccomp (the
containers-common default profile, CRI-O's RuntimeDefault) and runc's default masked and
read-only paths. Volumes are supplied by the caller as bind mounts (standing in for the
Secret and the SPIFFE CSI volume). The root filesystem is the host's own root, bound
read-only inside a private mount namespace (:func:`runc_argv`); ``private_run`` puts a
fresh tmpfs on its ``/run`` so mount points created for the container never touch the host.

This is not a kubelet: no image, no cgroups, no CNI (the container may share the host's
network namespace), no Secret/CSI plugins.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

DEFAULT_SECCOMP = Path("/usr/share/containers/seccomp.json")
_ARCH = {"x86_64": ("SCMP_ARCH_X86_64", "amd64"), "aarch64": ("SCMP_ARCH_AARCH64", "arm64")}

_RUN = """
mount --make-rprivate /
mount --rbind / "$1"
if [ "$2" = 1 ]; then mount -t tmpfs -o mode=0755 tmpfs "$1/run"; fi
exec "$3" --root "$4" run --bundle "$5" "$6"
"""


def runtime_default_seccomp(profile: dict[str, Any], caps: list[str]) -> dict[str, Any]:
    """A Docker-format default profile in OCI form for these capabilities, as runtimes do
    it: rules guarded by capabilities apply only when the container has them."""
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


def bind(source: Path | str, destination: str) -> dict[str, Any]:
    """A read-only bind mount, as the kubelet mounts a Secret or a read-only CSI volume."""
    return {
        "destination": destination,
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "ro"],
    }


def container_config(
    template: dict[str, Any],
    pod: dict[str, Any],
    *,
    rootfs: Path,
    seccomp_profile: dict[str, Any],
    mounts: list[dict[str, Any]],
    args: list[str] | None = None,
    path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    cwd: str = "/",
    own_network: bool = True,
) -> dict[str, Any]:
    """``template`` is ``runc spec`` output; ``args`` replaces the Pod's command line."""
    [container] = pod["spec"]["containers"]
    context = container["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    caps = [f"CAP_{name}" for name in context["capabilities"]["add"]]
    env = [f"{item['name']}={item['value']}" for item in container.get("env", [])]
    config = dict(template)
    config["root"] = {"path": str(rootfs), "readonly": context["readOnlyRootFilesystem"]}
    config["process"] = {
        **template["process"],
        "terminal": False,
        "user": {"uid": context["runAsUser"], "gid": context["runAsGroup"]},
        "args": args or [*container["command"], *container["args"]],
        "cwd": cwd,
        "env": [f"PATH={path}", *env],
        # allowPrivilegeEscalation unset: runtimes leave no_new_privs off.
        "noNewPrivileges": context.get("allowPrivilegeEscalation") is False,
        "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
    }
    base = [m for m in template["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    if not own_network:  # sysfs can only be mounted by the owner of the network namespace
        base = [
            {**bind("/sys", "/sys"), "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
            if m["destination"] == "/sys"
            else m
            for m in base
        ]
    config["mounts"] = base + mounts
    linux = dict(template["linux"])
    linux.pop("resources", None)
    linux["seccomp"] = runtime_default_seccomp(seccomp_profile, caps)
    kinds = ["pid", "ipc", "uts", "mount"] + (["network"] if own_network else [])
    linux["namespaces"] = [{"type": kind} for kind in kinds]
    config["linux"] = linux
    return config


def runc_argv(
    runc: str, rootfs: Path, state: Path, bundle: Path, container_id: str, *, private_run: bool
) -> list[str]:
    """``runc run`` in a private mount namespace with the host's root bound at ``rootfs``."""
    return [
        "unshare", "--mount", "--", "/bin/sh", "-ec", _RUN, "sh",
        str(rootfs), "1" if private_run else "0", runc, str(state), str(bundle), container_id,
    ]  # fmt: skip
