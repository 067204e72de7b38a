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
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grantbox.grants import GrantEngine
from grantbox.identity import WorkloadIdentityClient
from grantbox.profiles import EffectiveConfig
from grantbox.proxy import EgressProxy, SystemResolver, parse_overrides
from grantbox.sandbox.environment import agent_environment
from grantbox.sandbox.hiding import hidden_directories, socket_directory
from grantbox.sandbox.launcher import launch
from grantbox.sandbox.network import DEFAULT_PROXY_PORT, SandboxNetwork, create_sandbox_network
from grantbox.sandbox.spec import DEFAULT_CA_PATH, NOBODY, LaunchSpec
from grantbox.sandbox.trust import trust_bundle

from .exec_session import run_exec
from .gateway_client import ExecRequestItem, SupervisorClient, SupervisorClientError
from .outbox import Outbox

log = logging.getLogger("grantbox.supervisor")

IDLE_COMMAND = ("sleep", "infinity")
HEARTBEAT_INTERVAL = 5.0
SHIP_INTERVAL = 0.5
LONG_POLL_SECONDS = 25.0
STOP_GRACE = 5.0
MAX_LINE = 16 * 1024


@dataclass(frozen=True, slots=True)
class SupervisorOptions:
    gateway_url: str
    sandbox_id: str
    token_file: Path
    identity_socket: str
    command: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    proxy_port: int = DEFAULT_PROXY_PORT
    resolve: tuple[str, ...] = ()
    upstream_ca_file: Path | None = None
    rootless: bool | None = None
    declared_env: dict[str, str] = field(default_factory=dict)

    def hidden(self) -> tuple[str, ...]:
        """The identity socket's directory, the token's directory, and any extra ones."""
        token_dir = str(self.token_file.resolve().parent)
        return hidden_directories([socket_directory(self.identity_socket), token_dir, *self.hide])


def backoff(attempt: int) -> float:
    """Seconds to wait before retrying the gateway: 0.5, 1, 2, 4, then 5."""
    return float(min(5.0, 0.5 * 2 ** min(attempt, 4)))


class Supervisor:
    def __init__(self, options: SupervisorOptions) -> None:
        self.options = options
        self.rootless = os.geteuid() != 0 if options.rootless is None else options.rootless
        self._hidden = options.hidden()
        self._client = SupervisorClient.from_token_file(
            options.gateway_url, options.sandbox_id, options.token_file
        )
        self._identity = WorkloadIdentityClient(options.identity_socket)
        self._engine = GrantEngine(self._identity)
        self._logs: Outbox[dict[str, Any]] = Outbox(10_000)
        self._events: Outbox[dict[str, Any]] = Outbox(10_000)
        self._proxy: EgressProxy | None = None
        self._network: SandboxNetwork | None = None
        self._ca_pem = ""
        self._config: EffectiveConfig | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._execs: set[asyncio.Task[None]] = set()
        self._fence_error = ""

    def __repr__(self) -> str:
        return f"Supervisor(sandbox_id={self.options.sandbox_id!r})"

    # -- the agent's view -------------------------------------------------------------
    def launch_spec(self, argv: Sequence[str]) -> LaunchSpec:
        env = agent_environment(
            proxy_port=self.options.proxy_port,
            ca_bundle=DEFAULT_CA_PATH,
            declared=self.options.declared_env,
        )
        return LaunchSpec(
            argv=tuple(argv),
            env=env,
            hidden=self._hidden,
            ca_pem=self._ca_pem,
            uid=None if self.rootless else NOBODY,
            gid=None if self.rootless else NOBODY,
            nested_user_namespace=self.rootless,
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
        config = await self._first_config()
        if config is None:
            return 0
        self._config = config
        resolver = SystemResolver(parse_overrides(self.options.resolve))
        self._proxy = EgressProxy(
            config,
            self._engine,
            resolver=resolver,
            upstream_ca_file=self.options.upstream_ca_file,
            events=self._event,
        )
        self._ca_pem = trust_bundle(self._proxy.ca_cert_pem.decode())
        self._network = create_sandbox_network(self.options.proxy_port, rootless=self.rootless)
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
        return 0

    async def _shutdown(self) -> None:
        for task in list(self._execs):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ship_once(), 2.0)
        for task in list(self._tasks) + list(self._execs):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._execs, return_exceptions=True)
        if self._proxy is not None:
            await self._proxy.stop()
        if self._network is not None:
            self._network.close()
        await self._engine.aclose()
        await self._identity.aclose()
        await self._client.aclose()

    async def _keep_running(self, job: Callable[[], Awaitable[None]]) -> None:
        """Restart a background job after an unexpected error instead of losing it."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                await job()
                return
            except Exception:
                log.exception("%s failed; restarting it", job.__name__)
                await self._pause(backoff(attempt))
                attempt += 1

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- gateway ------------------------------------------------------------------------
    async def _first_config(self) -> EffectiveConfig | None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                return await self._client.config()
            except SupervisorClientError as exc:
                if exc.status in (401, 403, 404):
                    raise
                log.warning("gateway not ready (%s); retrying", exc)
            await self._pause(backoff(attempt))
            attempt += 1
        return None

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _heartbeat(self, revision: str, error: str = "") -> None:
        try:
            await self._client.heartbeat(revision, error)
        except SupervisorClientError as exc:
            log.warning("heartbeat failed: %s", exc)

    async def _heartbeats(self) -> None:
        while not self._stopping.is_set():
            await self._pause(HEARTBEAT_INTERVAL)
            if self._client.renewal_due():
                try:
                    await self._client.renew_token()
                except (SupervisorClientError, OSError) as exc:
                    log.warning("token renewal failed: %s", exc)
            if self._config is not None:
                await self._heartbeat(self._config.revision)

    async def _follow_config(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            assert self._config is not None and self._proxy is not None
            try:
                config = await self._client.config(
                    wait=self._config.revision, wait_seconds=LONG_POLL_SECONDS
                )
                attempt = 0
            except SupervisorClientError as exc:
                log.warning("config watch failed: %s", exc)
                await self._pause(backoff(attempt))
                attempt += 1
                continue
            if config.revision == self._config.revision:
                continue
            self._proxy.update(config)
            self._config = config
            log.info("sandbox %s: applied revision %s", self.options.sandbox_id, config.revision)
            await self._heartbeat(config.revision)

    # -- logs and events ----------------------------------------------------------------
    def _event(self, event: dict[str, Any]) -> None:
        # Shipped to the gateway (``grantbox sandbox logs``), not duplicated in our own log.
        self._events.put(event)

    async def _pump_lines(self, stream: asyncio.StreamReader, name: str) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:
                line = await stream.read(MAX_LINE)
            if not line:
                return
            text = line.decode(errors="replace").rstrip("\n")
            if name == "stderr" and text.startswith("sandbox: "):
                self._fence_error = text  # why the fence could not run the command
            self._logs.put({"message": text, "stream": name, "ts": time.time()})

    async def _ship_once(self) -> None:
        for outbox, send in (
            (self._logs, self._client.ship_logs),
            (self._events, self._client.ship_events),
        ):
            batch = outbox.take(1000)
            if not batch:
                continue
            try:
                await send(batch)
            except SupervisorClientError as exc:
                outbox.give_back(batch)
                log.warning("shipping failed: %s", exc)
                return

    async def _ship(self) -> None:
        while not self._stopping.is_set():
            await self._pause(SHIP_INTERVAL)
            await self._ship_once()

    # -- exec ---------------------------------------------------------------------------
    async def _serve_exec(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                item = await self._client.next_exec(LONG_POLL_SECONDS)
                attempt = 0
            except SupervisorClientError as exc:
                log.warning("exec channel failed: %s", exc)
                await self._pause(backoff(attempt))
                attempt += 1
                continue
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

        await run_exec(self._client, item, start)

    async def _report_exit(self, code: int) -> None:
        """Tell the gateway how the sandbox's own command ended, and why when the fence
        could not run it (init's ``sandbox: …`` line), before this process exits."""
        reason = self._fence_error.removeprefix("sandbox: ")
        try:
            await asyncio.wait_for(self._client.report_exit(code, reason), 5.0)
        except (SupervisorClientError, TimeoutError) as exc:
            log.warning("could not report the command's exit to the gateway: %s", exc)


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
