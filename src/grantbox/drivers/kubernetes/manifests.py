"""The sandbox's Secret and Pod as plain manifests (pure, schema-validated in tests).

Each sandbox becomes a Secret holding its supervisor token (mounted read-only, mode 0400,
owned by the Pod) and a Pod whose only container runs ``grantbox supervisor run`` with the
agent command as arguments, sized by :mod:`.sizing`. The SPIFFE Workload API socket comes
from the SPIFFE CSI driver as a read-only inline volume and is named only in the
supervisor's environment; the supervisor hides the socket's directory and the token's
directory from the agent.
"""

from __future__ import annotations

import base64
import posixpath
from typing import Any

from grantbox.drivers.invocation import SUBCOMMAND, SupervisorInvocation
from grantbox.drivers.protocol import DriverError, SandboxSpec

from .config import KubernetesDriverConfig, gateway_url_problem
from .names import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    SANDBOX_ID_KEY,
    SANDBOX_NAME_KEY,
    SPIFFE_CSI_DRIVER,
    SPIFFE_VOLUME,
    SUPERVISOR_CONTAINER,
    TOKEN_DIR,
    TOKEN_FILE_MODE,
    TOKEN_KEY,
    TOKEN_VOLUME,
    is_label_value,
    resource_name,
)
from .sizing import pod_resources

# What the supervisor's isolation calls need, and nothing else (see deploy/README.md):
#   SYS_ADMIN  unshare/setns of net, mount and PID namespaces; mount() of /proc, /tmp and
#              the empty tmpfs that hide the socket and token directories
#   NET_ADMIN  bring ``lo`` up inside the sandbox's fresh network namespace
#   SETUID/SETGID  drop the agent to uid/gid 65534 (setresuid, setresgid, setgroups)
#   KILL       relay SIGTERM from the sandbox's init (root) to the agent (another uid)
SANDBOX_CAPABILITIES = ("KILL", "NET_ADMIN", "SETGID", "SETUID", "SYS_ADMIN")


def sandbox_labels(spec: SandboxSpec, config: KubernetesDriverConfig) -> dict[str, str]:
    """Labels every object of a sandbox carries; the ClusterSPIFFEID selects on them."""
    labels = dict(config.extra_labels)
    name = spec.labels.get(SANDBOX_NAME_KEY, spec.name)
    if name and is_label_value(name):
        labels[SANDBOX_NAME_KEY] = name
    labels[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
    labels[SANDBOX_ID_KEY] = spec.sandbox_id
    return labels


def _metadata(spec: SandboxSpec, config: KubernetesDriverConfig) -> dict[str, Any]:
    return {
        "name": resource_name(spec.sandbox_id),
        "namespace": config.namespace,
        "labels": sandbox_labels(spec, config),
        "annotations": {SANDBOX_ID_KEY: spec.sandbox_id, SANDBOX_NAME_KEY: spec.name},
    }


def secret_manifest(
    spec: SandboxSpec, config: KubernetesDriverConfig, pod_uid: str
) -> dict[str, Any]:
    """The immutable Secret holding the supervisor token, owned by the sandbox's Pod (the
    one with ``pod_uid``): however the Pod goes, Kubernetes' garbage collector removes the
    Secret with it, so no token outlives its sandbox in the namespace."""
    token = base64.b64encode(spec.supervisor_token.encode()).decode()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": resource_name(spec.sandbox_id),
        "uid": pod_uid,
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**_metadata(spec, config), "ownerReferences": [pod]},
        "type": "Opaque",
        "immutable": True,
        "data": {TOKEN_KEY: token},
    }


def pod_gateway_url(spec: SandboxSpec, config: KubernetesDriverConfig) -> str:
    """The configured gateway URL, else the spec's when pods can reach it."""
    url = config.gateway_url or spec.gateway_url
    problem = gateway_url_problem(url)
    if problem is not None:
        raise DriverError(problem)
    return url.rstrip("/")


def supervisor_invocation(
    spec: SandboxSpec, config: KubernetesDriverConfig
) -> SupervisorInvocation:
    """The pod's supervisor: the token from the Secret volume, the socket from the CSI one."""
    return SupervisorInvocation(
        gateway_url=pod_gateway_url(spec, config),
        sandbox_id=spec.sandbox_id,
        token_file=posixpath.join(TOKEN_DIR, TOKEN_KEY),
        identity_socket=config.socket_path,
        command=spec.command,
        proxy_workers=config.proxy_workers,
    )


def supervisor_args(spec: SandboxSpec, config: KubernetesDriverConfig) -> list[str]:
    """``grantbox supervisor run`` options, then ``--`` and the agent command."""
    return supervisor_invocation(spec, config).args()


def _security_context(config: KubernetesDriverConfig) -> dict[str, Any]:
    if config.apparmor_profile.startswith("Localhost/"):
        apparmor = {"type": "Localhost", "localhostProfile": config.apparmor_profile[10:]}
    else:
        apparmor = {"type": config.apparmor_profile}
    # allowPrivilegeEscalation stays unset: the API refuses false next to SYS_ADMIN, and
    # the agent gets no_new_privs from the sandbox init before exec anyway.
    return {
        "runAsUser": 0,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "privileged": False,
        "readOnlyRootFilesystem": config.read_only_root,
        "capabilities": {"drop": ["ALL"], "add": list(SANDBOX_CAPABILITIES)},
        "seccompProfile": {"type": "RuntimeDefault"},
        "appArmorProfile": apparmor,
    }


def _identity_volume(config: KubernetesDriverConfig) -> dict[str, Any]:
    if config.spiffe_csi:
        return {"name": SPIFFE_VOLUME, "csi": {"driver": SPIFFE_CSI_DRIVER, "readOnly": True}}
    # Without SPIRE the directory still exists (the supervisor hides it) but stays empty, so
    # every grant fails closed with workload_identity_unavailable.
    return {"name": SPIFFE_VOLUME, "emptyDir": {"sizeLimit": "1Mi"}}


def pod_manifest(spec: SandboxSpec, config: KubernetesDriverConfig) -> dict[str, Any]:
    """The sandbox Pod: one supervisor container, the token file and the identity socket."""
    name = resource_name(spec.sandbox_id)
    invocation = supervisor_invocation(spec, config)
    environment = invocation.environment()  # PATH comes from the image
    container: dict[str, Any] = {
        "name": SUPERVISOR_CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["grantbox", *SUBCOMMAND],
        "args": invocation.args(),
        "env": [{"name": key, "value": value} for key, value in sorted(environment.items())],
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": SPIFFE_VOLUME, "mountPath": config.socket_directory, "readOnly": True},
        ],
        "securityContext": _security_context(config),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources = pod_resources(spec.limits, config)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "shareProcessNamespace": False,
        "terminationGracePeriodSeconds": config.termination_grace_seconds,
        "containers": [container],
        "volumes": [
            {
                "name": TOKEN_VOLUME,
                "secret": {
                    "secretName": name,
                    "defaultMode": TOKEN_FILE_MODE,
                    "items": [{"key": TOKEN_KEY, "path": TOKEN_KEY, "mode": TOKEN_FILE_MODE}],
                },
            },
            _identity_volume(config),
        ],
    }
    if config.service_account:
        pod_spec["serviceAccountName"] = config.service_account
    if config.runtime_class:
        pod_spec["runtimeClassName"] = config.runtime_class
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(spec, config),
        "spec": pod_spec,
    }
