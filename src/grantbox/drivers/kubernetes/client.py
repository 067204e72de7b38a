"""The Kubernetes driver's I/O: create, delete, read and watch sandbox pods.

Decisions are pure functions in the sibling modules (manifests, status, config);
:class:`KubernetesDriver` only moves them through the ``kubernetes`` client's asyncio API.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import stamina

from grantbox.drivers.protocol import (
    DriverError,
    DriverState,
    DriverStatus,
    SandboxRefused,
    SandboxSpec,
)

from .config import KubernetesDriverConfig
from .manifests import pod_manifest, secret_manifest
from .names import WATCH_SELECTOR, resource_name, sandbox_id_of
from .sizing import ceiling_problem
from .status import pod_status

if TYPE_CHECKING:
    from kubernetes.aio.client import Configuration

log = logging.getLogger("grantbox.drivers.kubernetes")


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


class KubernetesDriver:
    """Start, stop and watch sandbox pods in one namespace.

    ``api_config`` is a ``kubernetes.aio.client.Configuration``; when omitted, the in-cluster
    service account is used inside a pod and the kubeconfig elsewhere.
    """

    WATCH_TIMEOUT = 240
    MIN_QUIET_WATCH = 1.0
    WAIT_INITIAL = 0.5
    WAIT_MAX = 5.0

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
        too_big = ceiling_problem(spec.limits, self.config)
        if too_big is not None:
            raise SandboxRefused(too_big)
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
        """List, then watch from the list's version; reconnect through one retry schedule.

        Connecting (and listing when the version expired) is retried by stamina with growing
        waits. A watch that failed or ended at once without delivering anything makes the
        next connection wait first, so a server that ends every watch is not polled in a loop.
        """
        version = ""
        pace = False
        while True:
            listed: list[Mapping[str, Any]] = []
            async for attempt in stamina.retry_context(
                on=self._retry_watch,
                attempts=None,
                timeout=None,
                wait_initial=self.WAIT_INITIAL,
                wait_max=self.WAIT_MAX,
                wait_jitter=self.WAIT_INITIAL,
            ):
                with attempt:
                    if pace:
                        pace = False
                        raise _QuietWatch
                    core = await self._core()
                    if not version:
                        version, listed = await self._list(core)
            for pod in listed:
                found = self._event_status("ADDED", pod)
                if found is not None:
                    yield found
            started = time.monotonic()
            delivered = False
            try:
                async for kind, obj in self._watch_once(core, version):
                    delivered = True
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        version = str(rv)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        found = self._event_status(kind, obj)
                        if found is not None:
                            yield found
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _status_code(exc) == 410:
                    log.info("pod watch expired; listing sandbox pods again")
                    version = ""
                else:
                    log.warning(
                        "pod watch failed (%s); reconnecting", _api_failure("watch pods", exc)
                    )
                pace = not delivered
                continue
            pace = not delivered and time.monotonic() - started < self.MIN_QUIET_WATCH

    def _retry_watch(self, exc: Exception) -> bool:
        if not isinstance(exc, Exception):
            return False  # cancellation: never retried
        if not isinstance(exc, _QuietWatch):
            log.warning("pod watch failed (%s); retrying", _api_failure("watch pods", exc))
        return True


class _QuietWatch(Exception):
    """The last watch delivered nothing: wait before the next one."""


class _ApiStatus(Exception):
    """A failure status inside a watch stream or on a raw response."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
