"""The local compute driver: one supervisor process per sandbox on this host.

For each sandbox it makes a private state directory (0700) holding the supervisor token
(0600) and the supervisor's log, registers the sandbox's identity with the local identity
agent (``spiffe://<td>/grantbox/sandbox/<id>``, usable only by the supervisor's uid) or, with
``spire`` settings, as a registration entry of an external SPIRE selected by a gid reserved
for the sandbox's supervisor (:mod:`grantbox.drivers.spire`), starts
``grantbox supervisor run`` and reports its state to the gateway. Delete stops the
supervisor (which takes its agent down), unregisters the identity and removes the directory,
and returns only once the supervisor process is gone.

A supervisor that exits because the gateway no longer knows its sandbox is cleaned up the
same way. Directories left by an earlier run (whose supervisors should have died with it)
are reaped when the driver starts watching and every :data:`REAP_INTERVAL` seconds: a
supervisor still running there is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grantbox.drivers.invocation import (
    ORPHANED_EXIT_CODE,
    ORPHANED_MESSAGE,
    SupervisorInvocation,
)
from grantbox.drivers.protocol import DriverError, DriverState, DriverStatus, SandboxSpec
from grantbox.drivers.spire import (
    SandboxEntry,
    SpireError,
    SpireRegistrar,
    SpireSettings,
    load_entry,
    save_entry,
)
from grantbox.identity_agent import AdminError, add_workload_remote, remove_workload_remote
from grantbox.logformat import parse_line

log = logging.getLogger("grantbox.drivers.local")

STOP_GRACE = 10.0
TOKEN_FILE = "supervisor-token"  # noqa: S105 - a file name
LOG_FILE = "supervisor.log"
LOG_MAX_BYTES = 2 * 1024 * 1024
LOG_BACKUPS = 1
LOG_LINE_MAX = 16 * 1024
PID_FILE = "supervisor.pid"
REAP_INTERVAL = 10.0


def supervisor_command() -> list[str]:
    """How to start ``grantbox`` with the interpreter running us."""
    script = Path(sys.executable).with_name("grantbox")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from grantbox.cli import main; main()"]


@dataclass(frozen=True, slots=True)
class LocalDriverSettings:
    state_root: Path
    identity_admin_socket: Path
    hide: tuple[str, ...] = ()
    resolve: tuple[str, ...] = ()
    upstream_ca_file: Path | None = None
    proxy_port: int = 3128
    proxy_workers: int = 1
    """Processes serving each sandbox's egress proxy (``grantbox up --proxy-workers``)."""
    spire: SpireSettings | None = None
    """Identities from this external SPIRE instead of the local agent's admin socket."""


def supervisor_invocation(
    settings: LocalDriverSettings, spec: SandboxSpec, token_file: Path, identity_socket: Path
) -> SupervisorInvocation:
    """The supervisor's command line (no secrets: the token is in a 0600 file)."""
    upstream_ca = settings.upstream_ca_file
    return SupervisorInvocation(
        gateway_url=spec.gateway_url,
        sandbox_id=spec.sandbox_id,
        token_file=str(token_file),
        identity_socket=str(identity_socket),
        command=spec.command,
        proxy_port=settings.proxy_port,
        parent_pid=os.getpid(),
        hide=settings.hide,
        resolve=settings.resolve,
        upstream_ca_file=None if upstream_ca is None else str(upstream_ca),
        proxy_workers=settings.proxy_workers,
    )


def _create_private(path: Path, data: bytes) -> None:
    """Create a new 0600 file (never follow or reuse an existing one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """A size-capped log file created 0600 (the supervisor's log names sandboxes)."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8", errors="replace")


async def copy_capped(
    stream: asyncio.StreamReader,
    path: Path,
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
) -> None:
    """Copy a supervisor's output into ``path``, rotated at ``max_bytes`` with ``backups``
    old files kept, so a flood (say, accept errors) cannot fill the host's disk."""
    handler = _PrivateRotatingFile(path, maxBytes=max_bytes, backupCount=backups, delay=True)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        while True:
            try:
                line = await stream.readline()
            except ValueError:
                line = await stream.read(LOG_LINE_MAX)
            if not line:
                return
            text = line[:LOG_LINE_MAX].decode(errors="replace").rstrip("\n")
            handler.emit(logging.makeLogRecord({"msg": text, "levelno": logging.INFO}))
    finally:
        handler.close()


def _recorded_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _is_supervisor_of(pid: int, sandbox_id: str) -> bool:
    """Whether ``pid`` is still a ``supervisor run`` for ``sandbox_id`` (not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [word.decode(errors="replace") for word in argv]
    for at in range(len(words) - 1):
        if words[at : at + 2] == ["supervisor", "run"]:
            options = words[at + 2 :]
            return any(
                options[i : i + 2] == ["--sandbox-id", sandbox_id] for i in range(len(options))
            )
    return False


def _process_gone(pid: int) -> bool:
    """No such process, or a zombie (dead; only its parent's wait is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def _until_gone(pid: int, seconds: float) -> bool:
    """Wait (bounded) for a process that is not our child to disappear."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not _process_gone(pid):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _own_directory(root: Path, directory: Path) -> bool:
    return directory.is_dir() and directory.resolve().parent == root.resolve()


def last_error_line(path: Path, limit: int = 16384) -> str:
    """The last warning or error the supervisor logged (its log's tail only): the message of
    a JSON log record (grantbox.logformat), or a plain line such as ``error: …``."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        record = parse_line(line)
        if record is not None:
            if record["level"] in ("warning", "error", "critical"):
                return str(record["message"])
        elif " ERROR " in line or " WARNING " in line or line.startswith("error:"):
            return line
    return ""


def exit_status(code: int, log_path: Path) -> DriverStatus:
    """How a supervisor's exit reads to an operator."""
    if code == 0:
        return DriverStatus(DriverState.EXITED, "exited with 0")
    if code == ORPHANED_EXIT_CODE:
        return DriverStatus(DriverState.EXITED, ORPHANED_MESSAGE)
    how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
    detail = last_error_line(log_path)
    return DriverStatus(DriverState.FAILED, f"supervisor {how}" + (f": {detail}" if detail else ""))


@dataclass
class _Sandbox:
    directory: Path
    workload: str
    process: asyncio.subprocess.Process | None = None
    waiter: asyncio.Task[None] | None = None
    log_copier: asyncio.Task[None] | None = None
    teardown: asyncio.Future[None] | None = None
    spire_entry: SandboxEntry | None = None
    status: DriverStatus = field(default_factory=lambda: DriverStatus(DriverState.PENDING))


class LocalDriver:
    """Implements :class:`grantbox.drivers.ComputeDriver` with local processes."""

    def __init__(self, settings: LocalDriverSettings) -> None:
        self.settings = settings
        self._sandboxes: dict[str, _Sandbox] = {}
        self._updates: asyncio.Queue[tuple[str, DriverStatus]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._spire = SpireRegistrar(settings.spire) if settings.spire is not None else None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the driver's processes belong to (the gateway's), once used."""
        return self._loop

    def __repr__(self) -> str:
        return (
            f"LocalDriver(state_root={self.settings.state_root}, sandboxes={len(self._sandboxes)})"
        )

    def _report(self, sandbox_id: str, status: DriverStatus) -> None:
        entry = self._sandboxes.get(sandbox_id)
        if entry is not None:
            entry.status = status
        self._updates.put_nowait((sandbox_id, status))

    async def create(self, spec: SandboxSpec) -> None:
        self._loop = asyncio.get_running_loop()
        if spec.sandbox_id in self._sandboxes:
            raise DriverError(f"sandbox {spec.sandbox_id} already exists on this host")
        workload = spec.sandbox_id
        root = self.settings.state_root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory = root / spec.sandbox_id
        if directory.resolve().parent != root.resolve():
            raise DriverError(f"sandbox id {spec.sandbox_id!r} is not a safe directory name")
        if directory.exists():
            # Ids are unique; a directory left by a crashed run is stale (its supervisor died
            # with the process that started it).
            shutil.rmtree(directory)
        directory.mkdir(mode=0o700)
        entry = _Sandbox(directory=directory, workload=workload)
        self._sandboxes[spec.sandbox_id] = entry
        try:
            token_file = directory / TOKEN_FILE
            _create_private(token_file, (spec.supervisor_token + "\n").encode())
            group: int | None = None  # None: the supervisor keeps our own gid
            if self._spire is not None:
                registered = await self._spire.register(workload, spec.spiffe_path, os.geteuid())
                entry.spire_entry = registered
                save_entry(directory, registered)
                socket = self._spire.agent_socket
                group = registered.gid  # what SPIRE's unix attestor tells apart
            else:
                socket = await add_workload_remote(
                    self.settings.identity_admin_socket,
                    workload,
                    spec.spiffe_path,
                    uids=[os.geteuid()],
                )
            invocation = supervisor_invocation(self.settings, spec, token_file, socket)
            entry.process = await asyncio.create_subprocess_exec(
                *invocation.argv(supervisor_command()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=invocation.environment(path=os.environ.get("PATH", "/usr/bin:/bin")),
                start_new_session=True,
                group=group,
            )
            assert entry.process.stdout is not None
            entry.log_copier = asyncio.create_task(
                copy_capped(entry.process.stdout, directory / LOG_FILE)
            )
            _create_private(directory / PID_FILE, f"{entry.process.pid}\n".encode())
        except (OSError, AdminError, ValueError, SpireError) as exc:
            await self._remove(spec.sandbox_id)
            raise DriverError(f"cannot start the supervisor: {exc}") from None
        entry.waiter = asyncio.create_task(self._wait(spec.sandbox_id, entry))
        self._report(
            spec.sandbox_id,
            DriverStatus(DriverState.RUNNING, f"supervisor pid {entry.process.pid}"),
        )

    async def _wait(self, sandbox_id: str, entry: _Sandbox) -> None:
        assert entry.process is not None
        code = await entry.process.wait()
        if entry.log_copier is not None:
            await asyncio.gather(entry.log_copier, return_exceptions=True)
        self._report(sandbox_id, exit_status(code, entry.directory / LOG_FILE))
        if code == ORPHANED_EXIT_CODE and self._sandboxes.get(sandbox_id) is entry:
            # Nobody will ask to delete a sandbox the gateway forgot: clean up now.
            await self._remove(sandbox_id)

    async def delete(self, sandbox_id: str) -> None:
        """Stop the sandbox; returns once its supervisor process is gone."""
        if sandbox_id not in self._sandboxes:
            await self._reap_directory(self.settings.state_root / sandbox_id)
            return
        await self._remove(sandbox_id)

    async def reap(self) -> list[str]:
        """Remove sandbox directories this driver does not run (left by an earlier run),
        killing any supervisor still running in one. Returns the reaped sandbox ids."""
        root = self.settings.state_root
        try:
            children = sorted(os.listdir(root))
        except FileNotFoundError:
            return []
        reaped = []
        for name in children:
            directory = root / name
            if name not in self._sandboxes and _own_directory(root, directory):
                await self._reap_directory(directory)
                reaped.append(name)
        return reaped

    async def _reap_directory(self, directory: Path) -> None:
        if not _own_directory(self.settings.state_root, directory):
            return
        pid = _recorded_pid(directory / PID_FILE)
        if pid is not None and _is_supervisor_of(pid, directory.name):
            log.warning("sandbox %s: killing a leftover supervisor (pid %s)", directory.name, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await _until_gone(pid, STOP_GRACE)
        await self._unregister(directory.name, load_entry(directory))
        shutil.rmtree(directory, ignore_errors=True)

    async def _unregister(self, workload: str, spire_entry: SandboxEntry | None) -> None:
        """Take the sandbox's identity away: its SPIRE entry, or its local agent workload."""
        if self._spire is not None:
            try:
                await self._spire.unregister(workload, spire_entry)
            except SpireError as exc:
                log.warning("sandbox %s: its SPIRE entry was not deleted: %s", workload, exc)
            return
        with contextlib.suppress(AdminError, OSError):
            await remove_workload_remote(self.settings.identity_admin_socket, workload)

    async def _remove(self, sandbox_id: str) -> None:
        """Tear one sandbox down; concurrent callers (a delete racing the supervisor's own
        exit as orphaned) share one teardown."""
        entry = self._sandboxes.get(sandbox_id)
        if entry is None:
            return
        if entry.teardown is None:
            entry.teardown = asyncio.ensure_future(self._teardown(sandbox_id, entry))
        await asyncio.shield(entry.teardown)

    async def _teardown(self, sandbox_id: str, entry: _Sandbox) -> None:
        process = entry.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if entry.log_copier is not None:
            await asyncio.gather(entry.log_copier, return_exceptions=True)
        await self._unregister(entry.workload, entry.spire_entry or load_entry(entry.directory))
        shutil.rmtree(entry.directory, ignore_errors=True)
        if self._sandboxes.get(sandbox_id) is entry:
            del self._sandboxes[sandbox_id]

    async def status(self, sandbox_id: str) -> DriverStatus:
        entry = self._sandboxes.get(sandbox_id)
        if entry is None:
            return DriverStatus(DriverState.UNKNOWN, "not on this host")
        return entry.status

    async def watch(self) -> AsyncIterator[tuple[str, DriverStatus]]:
        """Status changes; reaps leftovers when it starts and every REAP_INTERVAL seconds."""
        self._loop = asyncio.get_running_loop()
        await self._reap_quietly()
        while True:
            try:
                yield await asyncio.wait_for(self._updates.get(), REAP_INTERVAL)
            except TimeoutError:
                await self._reap_quietly()

    async def _reap_quietly(self) -> None:
        try:
            await self.reap()
        except Exception:
            log.exception("reaping leftover sandboxes failed")

    def sandbox_ids(self) -> list[str]:
        return sorted(self._sandboxes)

    def supervisor_pid(self, sandbox_id: str) -> int | None:
        entry = self._sandboxes.get(sandbox_id)
        return entry.process.pid if entry and entry.process else None

    def state_dir(self, sandbox_id: str) -> Path | None:
        entry = self._sandboxes.get(sandbox_id)
        return entry.directory if entry else None

    async def aclose(self) -> None:
        """Stop every supervisor and remove every sandbox directory (``up`` shutdown)."""
        await asyncio.gather(
            *(self._remove(sandbox_id) for sandbox_id in list(self._sandboxes)),
            return_exceptions=True,
        )
