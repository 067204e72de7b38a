"""The supervisor: one per sandbox, the only process that holds its secrets.

It authenticates to the gateway with the per-sandbox token, fetches the effective config,
serves the egress proxy on the sandbox network's only listener, and launches the agent
behind the fence. While the agent runs it follows config revisions (applied with
``proxy.update`` without touching the agent), heartbeats, renews its token, ships the
agent's output and the proxy's OCSF events, and runs exec requests from the gateway with
the same isolation. It always dials the gateway; nothing dials it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from grantbox.drivers.invocation import ORPHANED_EXIT_CODE
from grantbox.grants import GrantEngine, TokenEndpointClient, read_ca_file
from grantbox.identity import WorkloadIdentityClient
from grantbox.profiles import EffectiveConfig, SandboxPolicy, build_effective_config
from grantbox.proxy import (
    EgressProxy,
    ProcPrograms,
    ProxyPool,
    SystemResolver,
    new_placeholder,
    parse_overrides,
)
from grantbox.sandbox.launcher import launch
from grantbox.sandbox.limits import CgroupUnavailable, Limits, SandboxCgroup, resolve
from grantbox.sandbox.network import SandboxNetwork, create_sandbox_network
from grantbox.sandbox.spec import LaunchSpec
from grantbox.sandbox.subids import for_operator, why_not
from grantbox.sandbox.trust import trust_bundle

from .exec_session import run_exec
from .gateway_client import ExecRequestItem, SupervisorClient, SupervisorClientError
from .launch import Fence, SupervisorOptions, agent_launch_spec
from .metrics import register_outbox_metrics, snapshot
from .retry import retrying
from .shipper import Shipper
from .shipping import bounded_message

log = logging.getLogger("grantbox.supervisor")

IDLE_COMMAND = ("sleep", "infinity")
HEARTBEAT_INTERVAL = 5.0
SHIP_INTERVAL = 0.5
LONG_POLL_SECONDS = 25.0
STOP_GRACE = 5.0
MAX_LINE = 16 * 1024
METRICS_RETRY = 600.0
"""After the gateway refuses a metrics snapshot: how long heartbeats go without one before
the supervisor offers it again (the gateway may have been upgraded meanwhile)."""
# How long proxy workers may take to apply a config (an orphan's empty one, or a new
# revision) before the supervisor goes on: the teardown, or reporting the revision applied.
WORKERS_SETTLE = 5.0


def _read_ca(options: SupervisorOptions) -> str:
    """The ``--upstream-ca`` bundle, trusted by token requests as by the proxy's upstreams
    (``ValueError`` when the file is unusable: the supervisor stops with that one line)."""
    path = options.upstream_ca_file
    return "" if path is None else read_ca_file(path)


class Supervisor:
    def __init__(self, options: SupervisorOptions) -> None:
        self.options = options
        self.rootless = options.is_rootless()
        self._hidden = options.hidden()
        self._client = SupervisorClient.from_token_file(
            options.gateway_url, options.sandbox_id, options.token_file
        )
        self._identity = WorkloadIdentityClient(options.identity_socket)
        # One registry for the proxy's, the grant engine's and the outbox's metrics
        # (--metrics-listen).
        self._registry = CollectorRegistry()
        self._metrics_server: Any = None
        # A snapshot of the registry rides on every heartbeat from this (monotonic) time on.
        self._metrics_from = 0.0
        # With proxy workers the engine's cache counters are summed with the workers' own
        # (their token reuse) through the pool, not registered beside it.
        pooled = options.proxy_workers > 1
        self._engine_registry = CollectorRegistry() if pooled else self._registry
        self._engine = GrantEngine(
            self._identity,
            client=TokenEndpointClient(extra_ca_pem=_read_ca(options)),
            registry=self._engine_registry,
        )
        self._shipper = Shipper(
            {"events": self._client.ship_events, "logs": self._client.ship_logs}
        )
        register_outbox_metrics(self._registry, self._shipper)
        self._proxy: EgressProxy | ProxyPool | None = None
        self._network: SandboxNetwork | None = None
        self._ca_pem = ""
        self._config: EffectiveConfig | None = None
        self._cgroup: SandboxCgroup | None = None
        self._limits: Limits = resolve()
        self._stopping = asyncio.Event()
        self._orphaned = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._execs: set[asyncio.Task[None]] = set()
        self._placeholders: dict[str, str] = {}  # provider:credential -> placeholder
        self._fence_error = ""

    def __repr__(self) -> str:
        return f"Supervisor(sandbox_id={self.options.sandbox_id!r})"

    @property
    def registry(self) -> CollectorRegistry:
        """Where the sandbox proxy's, grant engine's and outbox's metrics are registered."""
        return self._registry

    @property
    def shipper(self) -> Shipper:
        return self._shipper

    def serve_metrics(self) -> tuple[str, int] | None:
        """Serve the supervisor's metrics where ``--metrics-listen`` says (once); the address
        bound, or None when not asked to."""
        if self.options.metrics_listen is None:
            return None
        if self._metrics_server is None:
            host, port = self.options.metrics_listen
            self._metrics_server, _thread = start_http_server(port, host, registry=self._registry)
        bound = self._metrics_server.server_address
        return str(bound[0]), int(bound[1])

    # -- the agent's view -------------------------------------------------------------
    def launch_spec(self, argv: Sequence[str]) -> LaunchSpec:
        return agent_launch_spec(
            self.options,
            argv,
            ca_pem=self._ca_pem,
            fence=self._fence(),
            placeholders=self._agent_placeholders(),
        )

    # -- stored credentials: the agent holds placeholders, the proxy the values --------
    def _with_placeholders(self, config: EffectiveConfig) -> EffectiveConfig:
        """``config`` with a placeholder for each stored credential that has a value.

        A credential keeps its placeholder for the supervisor's life, so processes started
        earlier keep resolving across a value update; a credential no longer in the config
        (its provider detached) resolves nothing, whatever placeholder a process holds.
        """
        bound = config.statics.variables()
        for owner in config.secrets.values:
            if owner in bound and owner not in self._placeholders:
                self._placeholders[owner] = new_placeholder()
        # Every placeholder ever handed out goes to the proxy: the ones that resolve
        # nothing now are refused by name rather than passed on.
        return config.with_secrets(config.secrets.with_placeholders(self._placeholders))

    def _agent_placeholders(self) -> dict[str, str]:
        """Environment variable -> placeholder, for the credentials the config binds now."""
        if self._config is None:
            return {}
        bound = self._config.statics.variables()
        values = self._config.secrets.values
        return {
            bound[owner]: placeholder
            for owner, placeholder in self._config.secrets.placeholders.items()
            if owner in bound and owner in values
        }

    def _fence(self) -> Fence:
        """What this run learned for the fence: policy, uid, subordinate ids, cgroup."""
        return Fence(
            policy=self._config.policy if self._config is not None else SandboxPolicy(),
            agent_uid=self._config.agent_uid if self._config is not None else None,
            namespace_agent=self._network.agent_in_namespace if self._network else None,
            cgroup_procs=self._cgroup.procs_files if self._cgroup is not None else (),
            limits=self._limits,
        )

    def _agent_ids(self, config: EffectiveConfig) -> tuple[int, int] | None:
        """Rootless: the subordinate uid/gid the agent runs as, so it is not the operator."""
        if not self.rootless:
            return None
        found = for_operator(config.agent_uid or 0)
        if found is None:
            log.warning(
                "sandbox %s: rootless without subordinate ids (%s): the agent runs as your "
                "uid inside a root where nothing of yours is shown but the policy's paths",
                self.options.sandbox_id,
                why_not(),
            )
            return None
        return (found.uid, found.gid)

    def _bound(self, config: EffectiveConfig) -> None:
        """One cgroup for the whole sandbox (agent and every exec), or rlimits per process."""
        wanted = config.policy.limits
        self._limits = resolve(wanted.processes, wanted.memory_mib, wanted.cpus)
        try:
            self._cgroup = SandboxCgroup.create(self.options.sandbox_id, self._limits)
        except (CgroupUnavailable, OSError) as exc:
            log.warning(
                "sandbox %s: no cgroup (%s); bounding each process with rlimits instead "
                "(processes and memory; CPU stays unbounded)",
                self.options.sandbox_id,
                exc,
            )

    # -- lifecycle ----------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> int:
        """Run until the agent exits (its status) or a stop is requested (0)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            return await self._run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self._shutdown()

    async def _run(self) -> int:
        try:
            config = await self._first_config()
        except SupervisorClientError as exc:
            if not exc.sandbox_gone:
                raise
            await self._orphan(str(exc))
            return ORPHANED_EXIT_CODE
        if config is None:
            return 0
        config = self._with_placeholders(config)
        self._config = config
        self._bound(config)
        self._proxy = self._new_proxy(config)
        self.serve_metrics()
        self._ca_pem = trust_bundle(self._proxy.ca_cert_pem.decode())
        self._network = create_sandbox_network(
            self.options.proxy_port, rootless=self.rootless, agent_ids=self._agent_ids(config)
        )
        await self._proxy.start(sockets=[self._network.listener])
        agent = await launch(
            self.launch_spec(self.options.command or IDLE_COMMAND),
            self._network,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await self._heartbeat(config.revision)
        log.info(
            "sandbox %s: agent started (revision %s)", self.options.sandbox_id, config.revision
        )
        assert agent.stdout is not None and agent.stderr is not None
        pumps = [
            self._spawn(self._pump_lines(agent.stdout, "stdout")),
            self._spawn(self._pump_lines(agent.stderr, "stderr")),
        ]
        for job in (self._follow_config, self._heartbeats, self._ship, self._serve_exec):
            self._spawn(self._keep_running(job))
        waiter = asyncio.create_task(agent.wait())
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            stop.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            code = waiter.result()
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(level, "sandbox %s: agent exited with %s", self.options.sandbox_id, code)
            await self._report_exit(code)
            return code
        await _terminate(agent, waiter)
        await asyncio.gather(*pumps, return_exceptions=True)
        return ORPHANED_EXIT_CODE if self._orphaned else 0

    def _new_proxy(self, config: EffectiveConfig) -> EgressProxy | ProxyPool:
        """The sandbox's egress proxy: in this process, or over ``proxy_workers`` worker
        processes (children of this one) that ask this process's grant engine for tokens."""
        # binaries: the agent's (and each exec's) processes are this process's descendants
        # below the stage and init that launch() starts (workers are above that depth).
        programs = ProcPrograms(sandbox_of=os.getpid())
        if self.options.proxy_workers > 1:
            return ProxyPool(
                config,
                self._engine,
                workers=self.options.proxy_workers,
                resolve=self.options.resolve,
                upstream_ca_file=self.options.upstream_ca_file,
                events=self._event,
                encoded_events=self._shipper.encoded_events,
                registry=self._registry,
                programs=programs,
                own_registries=[self._engine_registry],
            )
        return EgressProxy(
            config,
            self._engine,
            resolver=SystemResolver(parse_overrides(self.options.resolve)),
            upstream_ca_file=self.options.upstream_ca_file,
            events=self._event,
            registry=self._registry,
            programs=programs,
        )

    async def _shutdown(self) -> None:
        for task in list(self._execs):
            task.cancel()
        if not self._orphaned:  # the gateway would refuse anything more
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ship_once(), 2.0)
        for task in list(self._tasks) + list(self._execs):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._execs, return_exceptions=True)
        if self._proxy is not None:
            await self._proxy.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self._network is not None:
            self._network.close()
        if self._cgroup is not None and not await asyncio.to_thread(self._cgroup.remove):
            log.warning("sandbox %s: a cgroup could not be removed", self.options.sandbox_id)
        await self._engine.aclose()
        await self._identity.aclose()
        await self._client.aclose()

    async def _keep_running(self, job: Callable[[], Awaitable[None]]) -> None:
        """Restart a background job after an unexpected error instead of losing it; a
        gateway answer that the sandbox is gone ends the sandbox instead."""
        try:
            await retrying(job, what=job.__name__, retry_on=_not_gone, traceback=True)
        except SupervisorClientError as exc:
            if not exc.sandbox_gone:
                raise
            await self._orphan(str(exc))

    # -- orphaned: the gateway no longer knows this sandbox -----------------------------
    @property
    def orphaned(self) -> str:
        """Why the sandbox was torn down as unknown to the gateway ("" while it is not)."""
        return self._orphaned

    async def _orphan(self, why: str) -> None:
        """Stop injecting at once, drop every cached token, then tear the sandbox down.

        The proxy is switched to a config with no endpoints and no bindings (every request
        is refused from now on), the grant engine forgets its tokens and is closed (any
        grant still asked for fails as token_grant_failed without reaching the identity
        agent or the token endpoint), proxy workers are waited for (bounded) until each
        applied that config, and the stop takes the agent down.
        """
        if self._orphaned:
            return
        self._orphaned = why or "the gateway no longer knows this sandbox"
        if self._proxy is not None:
            self._proxy.update(build_effective_config(self.options.sandbox_id, None, ()))
        self._engine.replace_bindings(())
        await self._engine.aclose()
        if isinstance(self._proxy, ProxyPool):
            # Workers decide by the old config (and reuse a token for up to a second) until
            # they read the update; the engine above already answers them with failures.
            await self._workers_settled(self._proxy, "the empty config")
        log.error(
            "sandbox %s: %s; refusing all traffic and tearing the sandbox down",
            self.options.sandbox_id,
            self._orphaned,
        )
        self.request_stop()

    async def _workers_settled(self, pool: ProxyPool, what: str) -> None:
        """Wait (bounded) until every proxy worker applied the pool's current config: until
        then a worker decides by the previous one (and may reuse a token it held)."""
        try:
            async with asyncio.timeout(WORKERS_SETTLE):
                await pool.settled()
        except TimeoutError:
            log.warning(
                "sandbox %s: a proxy worker did not apply %s within %.0f s; going on",
                self.options.sandbox_id,
                what,
                WORKERS_SETTLE,
            )

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- gateway ------------------------------------------------------------------------
    async def _first_config(self) -> EffectiveConfig | None:
        """The first config, or None when a stop comes first (4xx answers propagate)."""
        fetch = asyncio.ensure_future(retrying(self._client.config, what="first config fetch"))
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not fetch.done():
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
            return None
        return fetch.result()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _heartbeat(self, revision: str) -> None:
        """Report the applied revision and the sandbox's conditions (every heartbeat carries
        them all: a condition a heartbeat leaves out is gone from the gateway's view)."""
        conditions = [self._shipper.condition()]
        sending = time.monotonic() >= self._metrics_from
        metrics = snapshot(self._registry) if sending else None
        try:
            try:
                await self._client.heartbeat(revision, conditions=conditions, metrics=metrics)
            except SupervisorClientError as exc:
                if metrics is None or exc.status != 422:
                    raise
                # A gateway that predates sandbox metrics (or refuses this snapshot): the
                # heartbeat matters more; leave the metrics out for a while.
                self._metrics_from = time.monotonic() + METRICS_RETRY
                log.warning(
                    "the gateway refused the metrics snapshot; heartbeats go without it for "
                    "%.0f s: %s",
                    METRICS_RETRY,
                    exc,
                )
                await self._client.heartbeat(revision, conditions=conditions)
        except SupervisorClientError as exc:
            if exc.sandbox_gone:
                await self._orphan(str(exc))
                return
            log.warning("heartbeat failed: %s", exc)

    async def _heartbeats(self) -> None:
        while not self._stopping.is_set():
            await self._pause(HEARTBEAT_INTERVAL)
            await self._renew_token()
            if self._config is not None and not self._orphaned:
                await self._heartbeat(self._config.revision)

    async def _renew_token(self) -> None:
        """Renew before expiry; a token that expired unrenewed ends the sandbox."""
        if self._client.renewal_due():
            try:
                await self._client.renew_token()
            except SupervisorClientError as exc:
                if exc.sandbox_gone:
                    await self._orphan(str(exc))
                    return
                log.warning("token renewal failed: %s", exc)
            except OSError as exc:
                log.warning("renewed token not written to its file: %s", exc)
        if self._client.token_expired():
            await self._orphan("the supervisor token expired before it could be renewed")

    async def _follow_config(self) -> None:
        while not self._stopping.is_set():
            assert self._config is not None and self._proxy is not None
            revision = self._config.revision
            config = await retrying(
                functools.partial(
                    self._client.config, wait=revision, wait_seconds=LONG_POLL_SECONDS
                ),
                what="config watch",
            )
            if config.revision == self._config.revision:
                continue
            config = self._with_placeholders(config)
            self._proxy.update(config)
            if isinstance(self._proxy, ProxyPool):  # "applied" holds for every worker
                await self._workers_settled(self._proxy, f"revision {config.revision}")
            self._config = config
            log.info("sandbox %s: applied revision %s", self.options.sandbox_id, config.revision)
            await self._heartbeat(config.revision)

    # -- logs and events ----------------------------------------------------------------
    def _event(self, event: dict[str, Any]) -> None:
        # Shipped to the gateway (``grantbox sandbox events``), not duplicated in our own log.
        self._shipper.event(event)

    async def _pump_lines(self, stream: asyncio.StreamReader, name: str) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:
                line = await stream.read(MAX_LINE)
            if not line:
                return
            text, truncated = bounded_message(line.decode(errors="replace").rstrip("\n"))
            if name == "stderr" and text.startswith("sandbox: "):
                self._fence_error = text  # why the fence could not run the command
            self._shipper.log(text, name, truncated=truncated)

    async def _ship_once(self) -> bool:
        """One shipping round (events first); the gateway saying the sandbox is gone ends it.
        True when more is waiting and the gateway is taking it (ship again at once)."""
        try:
            return await self._shipper.ship_once()
        except SupervisorClientError as exc:
            if not exc.sandbox_gone:
                raise
            await self._orphan(str(exc))
            return False

    async def _ship(self) -> None:
        more = False
        while not self._stopping.is_set():
            if not more:
                await self._pause(SHIP_INTERVAL)
            more = await self._ship_once()

    # -- exec ---------------------------------------------------------------------------
    async def _serve_exec(self) -> None:
        while not self._stopping.is_set():
            item = await retrying(
                lambda: self._client.next_exec(LONG_POLL_SECONDS), what="exec channel"
            )
            if item is not None:
                task = asyncio.create_task(self._run_exec(item))
                self._execs.add(task)
                task.add_done_callback(self._execs.discard)

    async def _run_exec(self, item: ExecRequestItem) -> None:
        assert self._network is not None
        network = self._network

        def start(stdin: int | None, stdout: int | None, stderr: int | None) -> Any:
            spec = self.launch_spec(item.command)
            return launch(spec, network, stdin=stdin, stdout=stdout, stderr=stderr)

        async def ship() -> None:  # what the exec printed, shipped before its exit is told
            await self._ship_once()

        await run_exec(self._client, item, start, before_exit=ship)

    async def _report_exit(self, code: int) -> None:
        """Tell the gateway how the sandbox's own command ended, and why when the fence
        could not run it (init's ``sandbox: …`` line), before this process exits."""
        reason = self._fence_error.removeprefix("sandbox: ")
        try:
            await asyncio.wait_for(self._client.report_exit(code, reason), 5.0)
        except (SupervisorClientError, TimeoutError) as exc:
            log.warning("could not report the command's exit to the gateway: %s", exc)


def _not_gone(exc: Exception) -> bool:
    return not (isinstance(exc, SupervisorClientError) and exc.sandbox_gone)


async def _terminate(process: asyncio.subprocess.Process, waiter: asyncio.Task[int]) -> None:
    """SIGTERM (relayed to the agent by the stage and init), then SIGKILL after a grace."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(waiter), STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await waiter


async def run_supervisor(options: SupervisorOptions) -> int:
    return await Supervisor(options).run()
