"""The Kubernetes driver's I/O: create, delete, read and watch sandbox pods.

Decisions are pure functions in the sibling modules (manifests, sizing, status, config);
:class:`KubernetesDriver` only moves them through the ``kubernetes`` client's asyncio API.

Teardown works as the local driver's: ``delete`` returns once the pod is gone (bounded by
its grace period and :attr:`KubernetesDriver.CONFIRM_MARGIN`; past that it says it could not
confirm and keeps deleting, forced, in the background); a pod whose supervisor exited as
orphaned (exit 75) is deleted by the driver; and :meth:`KubernetesDriver.reconcile` (which
the gateway runs at start and periodically) removes the pods of sandboxes the gateway no
longer knows. One sandbox's create, delete and background teardown never interleave.
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
    KnownSandboxes,
    SandboxRefused,
    SandboxSpec,
)

from .config import KubernetesDriverConfig
from .manifests import pod_manifest, secret_manifest
from .names import WATCH_SELECTOR, gateway_of, resource_name, sandbox_id_of
from .sizing import ceiling_problem
from .status import orphaned, pod_status

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
    CONFIRM_MARGIN = 30.0
    """Seconds past a pod's grace period that ``delete`` waits for it to be gone."""
    CONFIRM_POLL = 0.5

    def __init__(
        self, config: KubernetesDriverConfig, api_config: Configuration | None = None
    ) -> None:
        require_client()
        self.config = config
        self._api_config = api_config
        self._api_client: Any | None = None
        self._deleting: set[str] = set()
        self._lock = asyncio.Lock()
        self._sandbox_locks: dict[str, asyncio.Lock] = {}
        self._teardowns: dict[str, asyncio.Task[None]] = {}

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
        teardowns = list(self._teardowns.values())
        for task in teardowns:
            task.cancel()
        await asyncio.gather(*teardowns, return_exceptions=True)
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
        pod = pod_manifest(spec, self.config)
        async with self._sandbox_lock(spec.sandbox_id):
            await self._stop_teardown(spec.sandbox_id)  # a new run: nothing old to remove
            self._deleting.discard(spec.sandbox_id)
            await self._create(spec, pod)

    async def _create(self, spec: SandboxSpec, pod: dict[str, Any]) -> None:
        """The Pod, then its token Secret owned by it. The kubelet waits for a Secret
        volume that does not exist yet, so the Pod may come first; owned, the Secret is
        collected with the Pod however the Pod goes (deleted by hand, evicted, or left by
        a delete of ours that failed half-way)."""
        core = await self._core()
        namespace = self.config.namespace
        name = pod["metadata"]["name"]
        try:
            created = await self._request(
                core.create_namespaced_pod_without_preload_content, namespace, pod
            )
            pod_uid = str(created["metadata"]["uid"])
        except Exception as exc:
            raise _api_failure("create the sandbox Pod", exc) from None
        try:
            await self._request(
                core.create_namespaced_secret_without_preload_content,
                namespace,
                secret_manifest(spec, self.config, pod_uid),
            )
        except Exception as exc:
            failure = _api_failure("create the sandbox token Secret", exc)
            self._deleting.add(spec.sandbox_id)  # our own clean-up, not a failure to report
            with contextlib.suppress(Exception):
                if not await self._delete_pod(core, name, grace=0):
                    self._deleting.discard(spec.sandbox_id)
            raise failure from None
        log.info("sandbox %s: created pod %s/%s", spec.sandbox_id, namespace, name)

    async def _delete_secret(self, core: Any, name: str) -> None:
        try:
            await self._request(
                core.delete_namespaced_secret_without_preload_content, name, self.config.namespace
            )
        except Exception as exc:
            if _status_code(exc) != 404:
                raise

    def _sandbox_lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._sandbox_locks.setdefault(sandbox_id, asyncio.Lock())

    async def _delete_pod(self, core: Any, name: str, grace: int) -> bool:
        """Ask the API to delete the pod; False when there was none."""
        try:
            await self._request(
                core.delete_namespaced_pod_without_preload_content,
                name,
                self.config.namespace,
                grace_period_seconds=grace,
                propagation_policy="Background",
            )
        except Exception as exc:
            if _status_code(exc) != 404:
                raise _api_failure("delete the sandbox Pod", exc) from None
            return False
        return True

    async def _pod_exists(self, core: Any, name: str) -> bool:
        try:
            await self._request(
                core.read_namespaced_pod_without_preload_content, name, self.config.namespace
            )
        except Exception as exc:
            if _status_code(exc) == 404:
                return False
            raise _api_failure("read the sandbox Pod", exc) from None
        return True

    async def _until_gone(self, core: Any, name: str, seconds: float) -> bool:
        """Wait (bounded) until the pod no longer exists; False when it still does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while await self._pod_exists(core, name):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(self.CONFIRM_POLL)
        return True

    def _confirm_seconds(self) -> float:
        return self.config.termination_grace_seconds + self.CONFIRM_MARGIN

    async def delete(self, sandbox_id: str) -> None:
        """Delete the sandbox's Pod and Secret; returns once the Pod is gone.

        A pod still there once its grace period and :attr:`CONFIRM_MARGIN` have passed (a
        node that stopped answering, a finalizer) makes this raise, saying so, while the
        driver keeps deleting it, forced, in the background.
        """
        name = resource_name(sandbox_id)
        async with self._sandbox_lock(sandbox_id):
            core = await self._core()
            self._deleting.add(sandbox_id)
            existed = await self._delete_pod(core, name, self.config.termination_grace_seconds)
            if not existed:
                self._deleting.discard(sandbox_id)  # no pod: no DELETED event will come
            try:
                await self._delete_secret(core, name)
            except Exception as exc:
                raise _api_failure("delete the sandbox token Secret", exc) from None
            gone = not existed or await self._until_gone(core, name, self._confirm_seconds())
            if gone:
                await self._stop_teardown(sandbox_id)
        if not gone:
            self._keep_tearing_down(sandbox_id, grace=0)
            raise DriverError(
                f"could not confirm that sandbox pod {name} is gone "
                f"{self._confirm_seconds():g} s after deleting it; still retrying the "
                "teardown (forced) in the background"
            )
        log.info("sandbox %s: pod and secret %s deleted", sandbox_id, name)

    # -- background teardown: orphans, strays, and deletes that could not be confirmed ----

    def _keep_tearing_down(self, sandbox_id: str, grace: int | None = None) -> None:
        """Delete the sandbox's pod and secret until the pod is confirmed gone (once)."""
        running = self._teardowns.get(sandbox_id)
        if running is None or running.done():
            self._deleting.add(sandbox_id)
            task = asyncio.get_running_loop().create_task(self._tear_down(sandbox_id, grace))
            self._teardowns[sandbox_id] = task

    async def _stop_teardown(self, sandbox_id: str) -> None:
        task = self._teardowns.pop(sandbox_id, None)
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _tear_down(self, sandbox_id: str, grace: int | None) -> None:
        """First with ``grace`` (the configured period when None), then forced; API
        failures and a pod that outlives each attempt are retried with growing waits."""
        name = resource_name(sandbox_id)
        first = self.config.termination_grace_seconds if grace is None else grace
        attempt_grace = first
        async for attempt in stamina.retry_context(
            on=self._retry_teardown,
            attempts=None,
            timeout=None,
            wait_initial=self.WAIT_INITIAL,
            wait_max=self.WAIT_MAX,
            wait_jitter=self.WAIT_INITIAL,
        ):
            with attempt:
                async with self._sandbox_lock(sandbox_id):
                    core = await self._core()
                    if await self._delete_pod(core, name, attempt_grace):
                        wait = attempt_grace + self.CONFIRM_MARGIN
                        attempt_grace = 0
                        if not await self._until_gone(core, name, wait):
                            raise _StillThere(name)
                    await self._delete_secret(core, name)
        log.info("sandbox %s: pod and secret %s removed", sandbox_id, name)
        if self._teardowns.get(sandbox_id) is asyncio.current_task():
            del self._teardowns[sandbox_id]

    def _retry_teardown(self, exc: Exception) -> bool:
        if not isinstance(exc, Exception):
            return False  # cancellation: never retried
        log.warning("teardown not confirmed yet (%s); retrying", exc)
        return True

    async def reconcile(self, known: KnownSandboxes) -> list[str]:
        """Remove the pods (and their secrets) of sandboxes the gateway no longer knows.

        Only pods whose supervisor talks to this driver's configured gateway URL are judged
        (another grantbox may share the namespace); without that URL nothing is. ``known`` is
        asked after the listing, so a sandbox created meanwhile is never a stray. Secrets
        are removed by name with their pods (the driver may not list secrets: listing
        would read their tokens).
        """
        if not self.config.gateway_url:
            return []
        ours = self.config.gateway_url.rstrip("/")
        core = await self._core()
        try:
            _, pods = await self._list(core)
        except Exception as exc:
            raise _api_failure("list sandbox pods", exc) from None
        running = {
            sandbox_id
            for pod in pods
            if (sandbox_id := sandbox_id_of(pod)) is not None and gateway_of(pod) == ours
        }
        if not running:
            return []
        strays = sorted(running - set(await known()))
        for sandbox_id in strays:
            if sandbox_id not in self._teardowns:
                log.warning(
                    "sandbox %s: the gateway no longer knows it; removing its pod", sandbox_id
                )
            self._keep_tearing_down(sandbox_id)
        return strays

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
        if orphaned(pod):
            # Nobody will ask to delete a sandbox the gateway forgot: remove it now.
            log.warning(
                "sandbox %s: its supervisor exited as orphaned; removing its pod", sandbox_id
            )
            self._keep_tearing_down(sandbox_id, grace=0)
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


class _StillThere(Exception):
    """The pod outlived a delete attempt."""

    def __init__(self, name: str) -> None:
        super().__init__(f"sandbox pod {name} still exists")


class _QuietWatch(Exception):
    """The last watch delivered nothing: wait before the next one."""


class _ApiStatus(Exception):
    """A failure status inside a watch stream or on a raw response."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
