"""The Kubernetes driver's settings: validated on construction, read from the environment.

The Helm chart's ConfigMap sets ``GRANTBOX_K8S_*`` variables; every value is checked before
the driver starts so a bad setting fails the gateway's start-up with one line naming it.
"""

from __future__ import annotations

import importlib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from grantbox.drivers.invocation import MAX_PROXY_WORKERS
from grantbox.drivers.protocol import DriverError
from grantbox.sandbox.hiding import shadow_problem
from grantbox.settings import settings_problem

from .names import (
    DEFAULT_SOCKET_PATH,
    MANAGED_BY_LABEL,
    SANDBOX_ID_KEY,
    SANDBOX_NAME_KEY,
    TOKEN_DIR,
    is_label_value,
)

MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the terminating NUL

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_APPARMOR = re.compile(r"Unconfined|RuntimeDefault|Localhost/[A-Za-z0-9._-]{1,200}")


class KubernetesConfigError(DriverError):
    """The driver's configuration is unusable; the message names the setting."""


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
    if shadow_problem(directory) is not None:
        # The one hiding policy every driver uses (grantbox.sandbox.hiding).
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
    # Ceilings on what one sandbox's policy may ask for (quantities, and a count).
    max_memory: str = ""
    max_cpu: str = ""
    max_processes: int | None = None
    # Processes serving each sandbox's egress proxy (the chart's sandboxes.proxyWorkers).
    proxy_workers: int = Field(default=1, ge=1, le=MAX_PROXY_WORKERS)

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
    max_memory_mib: int | None = None
    max_cpus: float | None = None
    max_processes: int | None = None
    proxy_workers: int = 1

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
        if not 1 <= self.proxy_workers <= MAX_PROXY_WORKERS:
            raise KubernetesConfigError(f"proxy workers must be 1-{MAX_PROXY_WORKERS}")
        if not 0 <= self.termination_grace_seconds <= 3600:
            raise KubernetesConfigError("termination grace must be 0-3600 seconds")
        for key, value in self.extra_labels.items():
            if key in (MANAGED_BY_LABEL, SANDBOX_ID_KEY, SANDBOX_NAME_KEY):
                raise KubernetesConfigError(f"label {key} is set by grantbox")
            if not is_label_value(value):
                raise KubernetesConfigError(f"label {key}={value!r} is not a valid label value")
        problem = resources_problem(self.resources)
        if problem is None:
            problem = ceilings_problem(self)
        if problem is not None:
            raise KubernetesConfigError(problem)

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
            max_memory_mib=_mebibytes(env.max_memory, f"{K8S_ENV_PREFIX}MAX_MEMORY"),
            max_cpus=_cpus(env.max_cpu, f"{K8S_ENV_PREFIX}MAX_CPU"),
            max_processes=env.max_processes,
            proxy_workers=env.proxy_workers,
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


_MEBIBYTE = Decimal(1024 * 1024)
_QUANTITY = re.compile(r"[+-]?[0-9.]+([eEinumkKMGTP]*[-+]?[0-9]*)")  # apimachinery's
_RESOURCE_ENV = {
    ("requests", "cpu"): "CPU_REQUEST",
    ("requests", "memory"): "MEMORY_REQUEST",
    ("limits", "cpu"): "CPU_LIMIT",
    ("limits", "memory"): "MEMORY_LIMIT",
}


def quantity(text: str, setting: str) -> Decimal:
    """A positive Kubernetes quantity (``512Mi``, ``1.5``, ``250m``), read by the
    Kubernetes client's own parser."""
    try:
        parse = importlib.import_module("kubernetes.utils.quantity").parse_quantity
    except ImportError:
        raise KubernetesConfigError(
            f"{setting}: reading quantities needs the Kubernetes client; install "
            "grantbox[kubernetes]"
        ) from None
    try:
        if not _QUANTITY.fullmatch(text):  # the API's own shape; the parser is laxer
            raise ValueError(text)
        value = Decimal(parse(text))
    except (ValueError, ArithmeticError, TypeError):
        raise KubernetesConfigError(
            f"{setting}: {text!r} is not a Kubernetes quantity (e.g. 512Mi, 2, 500m)"
        ) from None
    if not value.is_finite() or value <= 0:
        raise KubernetesConfigError(f"{setting}: {text!r} must be more than zero")
    return value


def _mebibytes(text: str, setting: str) -> int | None:
    return int(quantity(text, setting) // _MEBIBYTE) if text else None


def _cpus(text: str, setting: str) -> float | None:
    return float(quantity(text, setting)) if text else None


def resources_problem(resources: Mapping[str, Mapping[str, str]]) -> str | None:
    """Why the driver-wide pod ``resources`` are unusable (unknown names, values that are
    not quantities, a request above its limit), or None."""
    try:
        read: dict[tuple[str, str], Decimal] = {}
        for kind, values in resources.items():
            for resource, text in values.items():
                if (kind, resource) not in _RESOURCE_ENV:
                    return f"pod resources {kind}.{resource}: only requests/limits of cpu/memory"
                setting = K8S_ENV_PREFIX + _RESOURCE_ENV[(kind, resource)]
                read[(kind, resource)] = quantity(str(text), setting)
    except KubernetesConfigError as exc:
        return str(exc)
    for resource in ("cpu", "memory"):
        request, limit = read.get(("requests", resource)), read.get(("limits", resource))
        if request is not None and limit is not None and request > limit:
            return (
                f"{K8S_ENV_PREFIX}{resource.upper()}_REQUEST is above "
                f"{K8S_ENV_PREFIX}{resource.upper()}_LIMIT"
            )
    return None


def ceilings_problem(config: KubernetesDriverConfig) -> str | None:
    """Why the ceilings are unusable (not positive), or None."""
    for value, setting in (
        (config.max_memory_mib, "MAX_MEMORY"),
        (config.max_cpus, "MAX_CPU"),
        (config.max_processes, "MAX_PROCESSES"),
    ):
        if value is not None and value <= 0:
            return f"{K8S_ENV_PREFIX}{setting} must be more than zero"
    return None
