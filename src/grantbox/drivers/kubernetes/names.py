"""The names and fixed places grantbox uses for a sandbox's objects in the cluster.

Labels select managed pods (the watch, the ClusterSPIFFEID); the token and socket places are
where the supervisor finds its secrets inside the pod.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from grantbox.drivers.protocol import DriverError

MANAGED_BY_LABEL = "grantbox.dev/managed-by"
MANAGED_BY_VALUE = "grantbox"
SANDBOX_ID_KEY = "grantbox.dev/sandbox-id"
SANDBOX_NAME_KEY = "grantbox.dev/sandbox"
NAME_PREFIX = "grantbox-sandbox-"
SUPERVISOR_CONTAINER = "supervisor"
TOKEN_KEY = "token"  # noqa: S105 (a Secret key name)
TOKEN_DIR = "/run/grantbox/supervisor-token"  # noqa: S105 (a directory)
TOKEN_FILE_MODE = 0o400
SPIFFE_CSI_DRIVER = "csi.spiffe.io"
SPIFFE_VOLUME = "spiffe-workload-api"
TOKEN_VOLUME = "supervisor-token"  # noqa: S105 (a volume name)
DEFAULT_SOCKET_PATH = "/spiffe-workload-api/spire-agent.sock"

_SANDBOX_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,44}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")

WATCH_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"


def is_label_value(value: str) -> bool:
    """Whether ``value`` may be a Kubernetes label value."""
    return _LABEL_VALUE.fullmatch(value) is not None


def resource_name(sandbox_id: str) -> str:
    """The Pod's and Secret's name for a sandbox id (a DNS label)."""
    if not _SANDBOX_ID.fullmatch(sandbox_id):
        raise DriverError(f"sandbox id {sandbox_id!r} cannot name a Kubernetes object")
    return NAME_PREFIX + sandbox_id


def sandbox_id_of(pod: Mapping[str, Any]) -> str | None:
    """The sandbox a managed pod belongs to, or None for a pod that is not ours."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        return None
    sandbox_id = labels.get(SANDBOX_ID_KEY)
    return sandbox_id if isinstance(sandbox_id, str) and sandbox_id else None


def gateway_of(pod: Mapping[str, Any]) -> str | None:
    """The gateway URL a managed pod's supervisor talks to (its ``--gateway`` option)."""
    for container in (pod.get("spec") or {}).get("containers") or ():
        args = list(container.get("args") or ())
        for at in range(len(args) - 1):
            if args[at] == "--gateway":
                return str(args[at + 1]).rstrip("/")
    return None
