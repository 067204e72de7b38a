"""The Kubernetes compute driver: one Secret and one Pod per sandbox, watched to phases.

Each sandbox becomes a Secret holding its supervisor token (mounted read-only, mode 0400)
and a Pod whose only container runs ``grantbox supervisor run`` with the agent command as
arguments. The SPIFFE Workload API socket comes from the SPIFFE CSI driver as a read-only
inline volume and is named only in the supervisor's environment; the supervisor hides the
socket's directory and the token's directory from the agent.

Decisions are pure functions over plain data (:func:`pod_manifest`, :func:`secret_manifest`,
:func:`pod_status`, :func:`socket_path_problem`) so they can be tested and schema-validated
without a cluster; :class:`KubernetesDriver` only moves them through the ``kubernetes``
client's asyncio API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import json
import logging
import os
import posixpath
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .drivers import DriverError, DriverState, DriverStatus, SandboxSpec, register_driver
from .settings import settings_problem

if TYPE_CHECKING:
    from kubernetes.aio.client import Configuration

log = logging.getLogger("grantbox.gateway.kubernetes")

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
ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"

# What the supervisor's isolation calls need, and nothing else (see deploy/README.md):
#   SYS_ADMIN  unshare/setns of net, mount and PID namespaces; mount() of /proc, /tmp and
#              the empty tmpfs that hide the socket and token directories
#   NET_ADMIN  bring ``lo`` up inside the sandbox's fresh network namespace
#   SETUID/SETGID  drop the agent to uid/gid 65534 (setresuid, setresgid, setgroups)
#   KILL       relay SIGTERM from the sandbox's init (root) to the agent (another uid)
SANDBOX_CAPABILITIES = ("KILL", "NET_ADMIN", "SETGID", "SETUID", "SYS_ADMIN")

# Directories whose children every program relies on: a socket directly inside one of them
# would make the supervisor hide the whole directory from the agent.
_TEMPORARY = ("/tmp", "/var/tmp")  # noqa: S108 (refused as socket directories, never used)
SHARED_DIRECTORIES = frozenset(
    {
        "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt",
        "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/usr", "/usr/bin",
        "/usr/lib", "/usr/local", "/usr/local/bin", "/usr/sbin", "/usr/share", "/var",
        "/var/lib", "/var/log", "/var/run", *_TEMPORARY,
    }
)  # fmt: skip
_KERNEL_TREES = ("/proc/", "/sys/", "/dev/")
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the terminating NUL

_SANDBOX_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,44}[a-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_APPARMOR = re.compile(r"Unconfined|RuntimeDefault|Localhost/[A-Za-z0-9._-]{1,200}")
_MAX_MESSAGE = 300

# Waiting reasons after which a ``restartPolicy: Never`` pod will not start by itself.
_FATAL_WAITING = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImageNeverPull",
        "InvalidImageName",
        "RunContainerError",
    }
)


class KubernetesConfigError(DriverError):
    """The driver's configuration is unusable; the message names the setting."""


# -- configuration ---------------------------------------------------------------------------


def socket_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be the sandbox pods' Workload API socket, or None when it can.

    The CSI volume is mounted at the socket's directory and the supervisor hides that
    directory from the agent, so it must be a dedicated directory, not a shared one.
    """
    if not path:
        return "the Workload API socket path is empty"
    if path.startswith("unix:"):
        return f"give the socket as a filesystem path, not a URI ({path!r})"
    if any(ch.isspace() or not ch.isprintable() for ch in path):
        return f"socket path {path!r} contains whitespace or control characters"
    if not path.startswith("/"):
        return f"socket path {path!r} is not absolute"
    if posixpath.normpath(path) != path or path.startswith("//"):
        return f"socket path {path!r} is not normalised (no '.', '..', '//' or trailing '/')"
    if len(path.encode()) > MAX_SOCKET_PATH:
        return f"socket path {path!r} is longer than {MAX_SOCKET_PATH} bytes"
    directory = posixpath.dirname(path)
    if directory == "/":
        return (
            f"socket path {path!r} sits directly under /; put it in a dedicated directory "
            "such as /spiffe-workload-api/"
        )
    if directory in SHARED_DIRECTORIES or (directory + "/").startswith(_KERNEL_TREES):
        return (
            f"socket directory {directory} is shared with the rest of the system; the CSI "
            "volume is mounted over it and hidden from the agent, so use a dedicated "
            "directory such as /spiffe-workload-api/"
        )
    if _overlaps(directory, TOKEN_DIR):
        return f"socket directory {directory} overlaps the supervisor token directory"
    return None


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


K8S_ENV_PREFIX = "GRANTBOX_K8S_"


MISSING_CLIENT = (
    "the kubernetes driver needs the Kubernetes client, which is not installed; "
    "install grantbox[kubernetes] (pip install 'grantbox[kubernetes]')"
)


def require_client() -> None:
    """Refuse at start-up, not at the first sandbox, when the optional client is missing."""
    try:
        importlib.import_module("kubernetes.aio")
    except ImportError:
        raise DriverError(MISSING_CLIENT) from None


class KubernetesDriverEnv(BaseSettings):
    """The ``GRANTBOX_K8S_*`` variables (the Helm chart's ConfigMap sets them), typed.

    Only parsing lives here; what makes a value unusable is decided by
    :class:`KubernetesDriverConfig`, which both this and tests construct.
    """

    model_config = SettingsConfigDict(env_prefix=K8S_ENV_PREFIX, env_ignore_empty=True, frozen=True)

    namespace: str = ""
    sandbox_image: str = ""
    gateway_url: str = ""
    workload_api_socket: str = DEFAULT_SOCKET_PATH
    spiffe_csi: bool = True
    image_pull_policy: str = "IfNotPresent"
    service_account: str = ""
    runtime_class: str = ""
    apparmor_profile: str = "Unconfined"
    read_only_root: bool = True
    termination_grace_seconds: int = 10
    cpu_request: str = ""
    memory_request: str = ""
    cpu_limit: str = ""
    memory_limit: str = ""

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> KubernetesDriverEnv:
        """From the process environment, or from ``environ`` alone when given."""
        try:
            if environ is None:
                return cls()
            given = {
                key.removeprefix(K8S_ENV_PREFIX).lower(): value
                for key, value in environ.items()
                if key.startswith(K8S_ENV_PREFIX) and value
            }
            return cls.model_validate(given)
        except ValidationError as exc:
            raise KubernetesConfigError(settings_problem(exc, K8S_ENV_PREFIX)) from None

    def resources(self) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for kind, values in (
            ("requests", {"cpu": self.cpu_request, "memory": self.memory_request}),
            ("limits", {"cpu": self.cpu_limit, "memory": self.memory_limit}),
        ):
            chosen = {resource: value for resource, value in values.items() if value}
            if chosen:
                found[kind] = chosen
        return found


@dataclass(frozen=True, slots=True)
class KubernetesDriverConfig:
    """Where and how sandbox pods run. Validated on construction (driver start)."""

    namespace: str
    image: str
    gateway_url: str = ""
    socket_path: str = DEFAULT_SOCKET_PATH
    spiffe_csi: bool = True
    image_pull_policy: str = "IfNotPresent"
    service_account: str = ""
    runtime_class: str = ""
    apparmor_profile: str = "Unconfined"
    read_only_root: bool = True
    termination_grace_seconds: int = 10
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = socket_path_problem(self.socket_path)
        if problem is not None:
            raise KubernetesConfigError(problem)
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise KubernetesConfigError(f"namespace {self.namespace!r} is not a valid name")
        if not self.image or any(ch.isspace() for ch in self.image):
            raise KubernetesConfigError("the sandbox image is empty or contains whitespace")
        if self.image_pull_policy not in _PULL_POLICIES:
            raise KubernetesConfigError(
                f"image pull policy {self.image_pull_policy!r} is not one of "
                f"{', '.join(_PULL_POLICIES)}"
            )
        if not _APPARMOR.fullmatch(self.apparmor_profile):
            raise KubernetesConfigError(
                f"AppArmor profile {self.apparmor_profile!r} must be Unconfined, "
                "RuntimeDefault or Localhost/<profile>"
            )
        if self.gateway_url:
            problem = gateway_url_problem(self.gateway_url)
            if problem is not None:
                raise KubernetesConfigError(problem)
        if not 0 <= self.termination_grace_seconds <= 3600:
            raise KubernetesConfigError("termination grace must be 0-3600 seconds")
        for key, value in self.extra_labels.items():
            if key in (MANAGED_BY_LABEL, SANDBOX_ID_KEY, SANDBOX_NAME_KEY):
                raise KubernetesConfigError(f"label {key} is set by grantbox")
            if not _LABEL_VALUE.fullmatch(value):
                raise KubernetesConfigError(f"label {key}={value!r} is not a valid label value")

    @property
    def socket_directory(self) -> str:
        return posixpath.dirname(self.socket_path)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KubernetesDriverConfig:
        """Read ``GRANTBOX_K8S_*`` variables (the Helm chart's ConfigMap sets them)."""
        env = KubernetesDriverEnv.read(environ)
        if not env.sandbox_image:
            raise KubernetesConfigError(f"{K8S_ENV_PREFIX}SANDBOX_IMAGE is not set")
        return cls(
            namespace=env.namespace or _own_namespace(),
            image=env.sandbox_image,
            gateway_url=env.gateway_url,
            socket_path=env.workload_api_socket,
            spiffe_csi=env.spiffe_csi,
            image_pull_policy=env.image_pull_policy,
            service_account=env.service_account,
            runtime_class=env.runtime_class,
            apparmor_profile=env.apparmor_profile,
            read_only_root=env.read_only_root,
            termination_grace_seconds=env.termination_grace_seconds,
            resources=env.resources(),
        )


_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _own_namespace() -> str:
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        raise KubernetesConfigError(
            "GRANTBOX_K8S_NAMESPACE is not set and the gateway is not running in a pod"
        ) from None


def gateway_url_problem(url: str) -> str | None:
    """Why sandbox pods could not reach the gateway at ``url``, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"gateway URL {url!r} must be http(s)://HOST[:PORT]"
    if parts.hostname in ("0.0.0.0", "::", "localhost") or parts.hostname.startswith("127."):  # noqa: S104
        return (
            f"gateway URL {url!r} is the gateway's own listen address, which pods cannot "
            "reach; set GRANTBOX_K8S_GATEWAY_URL to the gateway Service URL"
        )
    if parts.hostname == "::1":
        return f"gateway URL {url!r} is loopback; set GRANTBOX_K8S_GATEWAY_URL"
    return None


# -- manifests (pure) ------------------------------------------------------------------------


def resource_name(sandbox_id: str) -> str:
    """The Pod's and Secret's name for a sandbox id (a DNS label)."""
    if not _SANDBOX_ID.fullmatch(sandbox_id):
        raise DriverError(f"sandbox id {sandbox_id!r} cannot name a Kubernetes object")
    return NAME_PREFIX + sandbox_id


def sandbox_labels(spec: SandboxSpec, config: KubernetesDriverConfig) -> dict[str, str]:
    """Labels every object of a sandbox carries; the ClusterSPIFFEID selects on them."""
    labels = dict(config.extra_labels)
    name = spec.labels.get(SANDBOX_NAME_KEY, spec.name)
    if name and _LABEL_VALUE.fullmatch(name):
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


def secret_manifest(spec: SandboxSpec, config: KubernetesDriverConfig) -> dict[str, Any]:
    """The immutable Secret holding the supervisor token."""
    token = base64.b64encode(spec.supervisor_token.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, config),
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


def supervisor_args(spec: SandboxSpec, config: KubernetesDriverConfig) -> list[str]:
    """``grantbox supervisor run`` options, then ``--`` and the agent command."""
    args = [
        "--gateway",
        pod_gateway_url(spec, config),
        "--sandbox-id",
        spec.sandbox_id,
        "--token-file",
        posixpath.join(TOKEN_DIR, TOKEN_KEY),
        "--identity-socket",
        "unix://" + config.socket_path,
    ]
    if spec.command:
        args += ["--", *spec.command]
    return args


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
    container: dict[str, Any] = {
        "name": SUPERVISOR_CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["grantbox", "supervisor", "run"],
        "args": supervisor_args(spec, config),
        "env": [{"name": ENDPOINT_ENV, "value": "unix://" + config.socket_path}],
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": SPIFFE_VOLUME, "mountPath": config.socket_directory, "readOnly": True},
        ],
        "securityContext": _security_context(config),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if config.resources:
        container["resources"] = {k: dict(v) for k, v in config.resources.items()}
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


# -- status (pure) ---------------------------------------------------------------------------


def _why(reason: str, message: object) -> str:
    return _short(f"{reason}: {message}" if message else reason)


def _short(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _MAX_MESSAGE else flat[: _MAX_MESSAGE - 1] + "…"


def _supervisor_state(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or ():
        if status.get("name") == SUPERVISOR_CONTAINER:
            state: Mapping[str, Any] = status.get("state") or {}
            return state
    return {}


def _terminated_message(terminated: Mapping[str, Any]) -> str:
    code = terminated.get("exitCode")
    reason = terminated.get("reason") or ""
    text = f"supervisor exited with code {code}"
    if reason:
        text += f" ({reason})"
    if terminated.get("message"):
        text += f": {terminated['message']}"
    return _short(text)


def pod_status(pod: Mapping[str, Any]) -> DriverStatus:
    """Map a Pod (as the API returns it) to the driver state the gateway derives phases from.

    Pending → PENDING (provisioning), Running → RUNNING (ready once the supervisor
    heartbeats), Succeeded → EXITED, Failed → FAILED (both shown as error), a pod being
    deleted → EXITED, anything else → UNKNOWN.
    """
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or ""
    state = _supervisor_state(pod)
    if metadata.get("deletionTimestamp"):
        return DriverStatus(DriverState.EXITED, "sandbox pod is being deleted")
    if phase == "Pending":
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason") or ""
        if reason in _FATAL_WAITING:
            return DriverStatus(DriverState.FAILED, _why(reason, waiting.get("message")))
        if reason:
            return DriverStatus(DriverState.PENDING, _why(reason, waiting.get("message")))
        for condition in status.get("conditions") or ():
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                why = condition.get("reason") or "not scheduled"
                return DriverStatus(DriverState.PENDING, _why(why, condition.get("message")))
        return DriverStatus(DriverState.PENDING, "pod is pending")
    if phase == "Running":
        terminated = state.get("terminated")
        if terminated:
            failed = terminated.get("exitCode") != 0
            return DriverStatus(
                DriverState.FAILED if failed else DriverState.EXITED,
                _terminated_message(terminated),
            )
        return DriverStatus(DriverState.RUNNING, "")
    if phase == "Succeeded":
        terminated = state.get("terminated") or {"exitCode": 0}
        return DriverStatus(DriverState.EXITED, _terminated_message(terminated))
    if phase == "Failed":
        terminated = state.get("terminated")
        if terminated:
            return DriverStatus(DriverState.FAILED, _terminated_message(terminated))
        reason = status.get("reason") or "pod failed"
        return DriverStatus(DriverState.FAILED, _why(reason, status.get("message")))
    return DriverStatus(DriverState.UNKNOWN, _short(f"pod phase {phase or 'unknown'}"))


def sandbox_id_of(pod: Mapping[str, Any]) -> str | None:
    """The sandbox a managed pod belongs to, or None for a pod that is not ours."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        return None
    sandbox_id = labels.get(SANDBOX_ID_KEY)
    return sandbox_id if isinstance(sandbox_id, str) and sandbox_id else None


WATCH_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"


# -- the driver (I/O) ------------------------------------------------------------------------


def _api_failure(action: str, exc: BaseException) -> DriverError:
    """A safe, one-line error: the status and reason only, never a request body."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None) or type(exc).__name__
    if status:
        return DriverError(f"kubernetes API refused to {action}: {status} {reason}")
    return DriverError(f"kubernetes API unreachable while trying to {action}: {reason}")


def _status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status", None)
    return code if isinstance(code, int) else None


class KubernetesDriver:
    """Start, stop and watch sandbox pods in one namespace.

    ``api_config`` is a ``kubernetes.aio.client.Configuration``; when omitted, the in-cluster
    service account is used inside a pod and the kubeconfig elsewhere.
    """

    WATCH_TIMEOUT = 240
    MIN_QUIET_WATCH = 1.0
    RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)

    def __init__(
        self, config: KubernetesDriverConfig, api_config: Configuration | None = None
    ) -> None:
        require_client()
        self.config = config
        self._api_config = api_config
        self._api_client: Any | None = None
        self._deleting: set[str] = set()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"KubernetesDriver(namespace={self.config.namespace!r})"

    @classmethod
    def from_env(cls) -> KubernetesDriver:
        return cls(KubernetesDriverConfig.from_env())

    async def _core(self) -> Any:
        from kubernetes.aio import client, config

        async with self._lock:
            if self._api_client is None:
                api_config = self._api_config
                if api_config is None:
                    api_config = client.Configuration()
                    if os.environ.get("KUBERNETES_SERVICE_HOST"):
                        config.load_incluster_config(client_configuration=api_config)  # type: ignore[no-untyped-call]
                    else:
                        await config.load_kube_config(client_configuration=api_config)  # type: ignore[no-untyped-call]
                self._api_client = client.ApiClient(api_config)
            return client.CoreV1Api(self._api_client)

    async def aclose(self) -> None:
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = None

    async def _request(self, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Run a ``*_without_preload_content`` API call; the JSON answer, or ``_ApiStatus``.

        Answers are read as plain JSON, never as the client's models, so a field the models
        do not know (or a newer API server) cannot break the driver.
        """
        response = await call(*args, **kwargs)
        try:
            if response.status >= 400:
                reason = ""
                with contextlib.suppress(Exception):
                    reason = str((await response.json()).get("reason") or "")
                raise _ApiStatus(response.status, reason or str(response.reason or ""))
            return await response.json()
        finally:
            response.release()

    async def create(self, spec: SandboxSpec) -> None:
        secret = secret_manifest(spec, self.config)
        pod = pod_manifest(spec, self.config)
        core = await self._core()
        namespace = self.config.namespace
        try:
            await self._request(
                core.create_namespaced_secret_without_preload_content, namespace, secret
            )
        except Exception as exc:
            raise _api_failure("create the sandbox token Secret", exc) from None
        try:
            await self._request(core.create_namespaced_pod_without_preload_content, namespace, pod)
        except Exception as exc:
            failure = _api_failure("create the sandbox Pod", exc)
            with contextlib.suppress(Exception):
                await self._delete_secret(core, secret["metadata"]["name"])
            raise failure from None
        log.info(
            "sandbox %s: created pod %s/%s", spec.sandbox_id, namespace, pod["metadata"]["name"]
        )

    async def _delete_secret(self, core: Any, name: str) -> None:
        try:
            await self._request(
                core.delete_namespaced_secret_without_preload_content, name, self.config.namespace
            )
        except Exception as exc:
            if _status_code(exc) != 404:
                raise

    async def delete(self, sandbox_id: str) -> None:
        name = resource_name(sandbox_id)
        core = await self._core()
        self._deleting.add(sandbox_id)
        try:
            await self._request(
                core.delete_namespaced_pod_without_preload_content,
                name,
                self.config.namespace,
                grace_period_seconds=self.config.termination_grace_seconds,
                propagation_policy="Background",
            )
        except Exception as exc:
            if _status_code(exc) != 404:
                raise _api_failure("delete the sandbox Pod", exc) from None
            self._deleting.discard(sandbox_id)  # no pod: no DELETED event will come
        try:
            await self._delete_secret(core, name)
        except Exception as exc:
            raise _api_failure("delete the sandbox token Secret", exc) from None
        log.info("sandbox %s: deleted pod and secret %s", sandbox_id, name)

    async def status(self, sandbox_id: str) -> DriverStatus:
        core = await self._core()
        try:
            pod = await self._request(
                core.read_namespaced_pod_without_preload_content,
                resource_name(sandbox_id),
                self.config.namespace,
            )
        except Exception as exc:
            if _status_code(exc) == 404:
                return DriverStatus(DriverState.UNKNOWN, "no sandbox pod")
            raise _api_failure("read the sandbox Pod", exc) from None
        return pod_status(pod)

    def _event_status(self, kind: str, pod: Mapping[str, Any]) -> tuple[str, DriverStatus] | None:
        sandbox_id = sandbox_id_of(pod)
        if sandbox_id is None:
            return None
        if sandbox_id in self._deleting:
            if kind == "DELETED":
                self._deleting.discard(sandbox_id)
            return None  # the gateway already shows it as deleting
        if kind == "DELETED":
            return sandbox_id, DriverStatus(DriverState.FAILED, "the sandbox pod was deleted")
        return sandbox_id, pod_status(pod)

    async def _list(self, core: Any) -> tuple[str, list[Mapping[str, Any]]]:
        body = await self._request(
            core.list_namespaced_pod_without_preload_content,
            self.config.namespace,
            label_selector=WATCH_SELECTOR,
        )
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        return version, list(body.get("items") or [])

    async def _watch_once(
        self, core: Any, version: str
    ) -> AsyncIterator[tuple[str, Mapping[str, Any]]]:
        """One watch request: ``(event type, raw object)`` until the server ends it."""
        response = await core.list_namespaced_pod_without_preload_content(
            self.config.namespace,
            label_selector=WATCH_SELECTOR,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.WATCH_TIMEOUT,
            watch=True,
            _request_timeout=float(self.WATCH_TIMEOUT + 30),
        )
        try:
            if response.status >= 400:
                raise _ApiStatus(response.status, "watch refused")
            while line := await response.content.readline():
                event = json.loads(line)
                kind = str(event.get("type", ""))
                obj = event.get("object") or {}
                if kind == "ERROR":
                    raise _ApiStatus(int(obj.get("code") or 500), str(obj.get("reason") or ""))
                yield kind, obj
        finally:
            response.release()

    async def watch(self) -> AsyncIterator[tuple[str, DriverStatus]]:
        """Every managed pod's status now, then each change; survives API restarts."""
        try:
            async for item in self._follow():
                yield item
        finally:
            # The gateway stops watching when it shuts down: release the HTTP session.
            await self.aclose()

    async def _follow(self) -> AsyncIterator[tuple[str, DriverStatus]]:
        attempt = 0
        version = ""
        while True:
            try:
                core = await self._core()
                if not version:
                    version, pods = await self._list(core)
                    for pod in pods:
                        found = self._event_status("ADDED", pod)
                        if found is not None:
                            yield found
                started = time.monotonic()
                delivered = False
                async for kind, obj in self._watch_once(core, version):
                    attempt, delivered = 0, True
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        version = str(rv)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        found = self._event_status(kind, obj)
                        if found is not None:
                            yield found
                if not delivered and time.monotonic() - started < self.MIN_QUIET_WATCH:
                    # A server that ends every watch at once must not be polled in a loop.
                    await asyncio.sleep(self._next_delay(attempt))
                    attempt += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _status_code(exc) == 410:
                    log.info("pod watch expired; listing sandbox pods again")
                    version = ""
                    if attempt:
                        await asyncio.sleep(self._next_delay(attempt))
                    attempt += 1
                    continue
                delay = self._next_delay(attempt)
                attempt += 1
                problem = _api_failure("watch pods", exc)
                log.warning("pod watch failed (%s); retrying in %s s", problem, delay)
                await asyncio.sleep(delay)

    def _next_delay(self, attempt: int) -> float:
        return self.RETRY_DELAYS[min(attempt, len(self.RETRY_DELAYS) - 1)]


class _ApiStatus(Exception):
    """A failure status inside a watch stream or on a raw response."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


register_driver("kubernetes", KubernetesDriver.from_env)
