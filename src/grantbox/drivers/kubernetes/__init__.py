"""The Kubernetes compute driver: one Secret and one Pod per sandbox, watched to phases.

Modules by job: :mod:`.config` (settings), :mod:`.names` (labels and fixed places),
:mod:`.manifests`, :mod:`.sizing` and :mod:`.status` (pure), :mod:`.client` (the API I/O).
Importing the package registers the driver as ``kubernetes``.
"""

from grantbox.drivers.protocol import register_driver

from .client import KubernetesDriver
from .config import (
    KubernetesConfigError,
    KubernetesDriverConfig,
    gateway_url_problem,
    socket_path_problem,
)
from .manifests import (
    SANDBOX_CAPABILITIES,
    pod_gateway_url,
    pod_manifest,
    sandbox_labels,
    secret_manifest,
    supervisor_args,
)
from .names import (
    DEFAULT_SOCKET_PATH,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    NAME_PREFIX,
    SANDBOX_ID_KEY,
    SANDBOX_NAME_KEY,
    SPIFFE_CSI_DRIVER,
    SPIFFE_VOLUME,
    SUPERVISOR_CONTAINER,
    TOKEN_DIR,
    TOKEN_FILE_MODE,
    TOKEN_KEY,
    TOKEN_VOLUME,
    WATCH_SELECTOR,
    resource_name,
    sandbox_id_of,
)
from .sizing import (
    SUPERVISOR_MEMORY_MIB,
    SUPERVISOR_MILLICPU,
    WORKER_MEMORY_MIB,
    WORKER_MILLICPU,
    ceiling_problem,
    millicores,
    pod_resources,
    supervisor_share,
)
from .status import pod_status

register_driver("kubernetes", KubernetesDriver.from_env)

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "NAME_PREFIX",
    "SANDBOX_CAPABILITIES",
    "SANDBOX_ID_KEY",
    "SANDBOX_NAME_KEY",
    "SPIFFE_CSI_DRIVER",
    "SPIFFE_VOLUME",
    "SUPERVISOR_CONTAINER",
    "SUPERVISOR_MEMORY_MIB",
    "SUPERVISOR_MILLICPU",
    "TOKEN_DIR",
    "TOKEN_FILE_MODE",
    "TOKEN_KEY",
    "TOKEN_VOLUME",
    "WATCH_SELECTOR",
    "WORKER_MEMORY_MIB",
    "WORKER_MILLICPU",
    "KubernetesConfigError",
    "KubernetesDriver",
    "KubernetesDriverConfig",
    "ceiling_problem",
    "gateway_url_problem",
    "millicores",
    "pod_gateway_url",
    "pod_manifest",
    "pod_resources",
    "pod_status",
    "resource_name",
    "sandbox_id_of",
    "sandbox_labels",
    "secret_manifest",
    "socket_path_problem",
    "supervisor_args",
    "supervisor_share",
]
