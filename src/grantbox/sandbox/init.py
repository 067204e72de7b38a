"""PID 1 of a sandbox: builds the agent's view of the system, then runs and reaps it.

Runs inside fresh mount and PID namespaces (and the sandbox network namespace) as the
namespace's root. It makes every mount private (nothing propagates back to the host),
mounts a fresh ``/proc`` (so no host process is visible), private ``/tmp``, ``/var/tmp``
and ``/dev/shm``, its own ``/sys``, and covers the hidden directories with empty read-only
tmpfs. Then it forks the agent, which drops to an unprivileged user with ``no_new_privs``
before exec. When the agent exits, init exits with
its status and the kernel kills whatever else is left in the PID namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import termios

from . import syscalls as sc
from .spec import PRIVATE_TMP, PRIVATE_TMP_SIZE, LaunchSpec

FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
SHARED_WRITABLE = ("/dev/shm", "/var/tmp")  # noqa: S108 - covered by private tmpfs
_RO_FLAGS = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC


class SetupFailed(RuntimeError):
    """The sandbox could not be built; nothing of the agent has run."""


def exit_status(wait_status: int) -> int:
    """Shell convention: the exit code, or 128 + signal number."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def uncovered_hidden(hidden: tuple[str, ...]) -> tuple[str, ...]:
    """Hidden directories not already covered by the private ``/tmp``."""
    return tuple(p for p in hidden if p != PRIVATE_TMP and not p.startswith(PRIVATE_TMP + "/"))


def prepare_filesystem(spec: LaunchSpec) -> None:
    """Mount the agent's view; fails closed if any hidden directory cannot be covered."""
    sc.mount("none", "/", None, sc.MS_REC | sc.MS_PRIVATE, None)
    sc.mount("proc", "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, None)
    # Hide first: a hidden directory may sit below /tmp's siblings but never below /tmp
    # itself, which the private tmpfs covers anyway.
    for path in uncovered_hidden(spec.hidden):
        if not os.path.isdir(path):
            raise SetupFailed(f"hidden directory {path} does not exist; refusing to start")
        sc.mount("tmpfs", path, "tmpfs", _RO_FLAGS, "size=4k,mode=0555")
    sc.mount(
        "tmpfs",
        PRIVATE_TMP,
        "tmpfs",
        sc.MS_NOSUID | sc.MS_NODEV,
        f"size={PRIVATE_TMP_SIZE},mode=1777",
    )
    # Other world-writable places would let sandboxes (and host processes) pass files.
    for path in SHARED_WRITABLE:
        if os.path.isdir(path) and not os.path.islink(path):
            sc.mount("tmpfs", path, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "size=64m,mode=1777")
    # A sysfs of our own shows only the sandbox's interfaces; where the kernel refuses it
    # (some rootless setups), the host's read-only view stays, which reveals no secret.
    with contextlib.suppress(OSError):
        sc.mount("sysfs", "/sys", "sysfs", _RO_FLAGS, None)
    if spec.ca_pem:
        parent = os.path.dirname(spec.ca_path)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        fd = os.open(spec.ca_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        with os.fdopen(fd, "w") as handle:
            handle.write(spec.ca_pem)


def _enter_nested_user_namespace() -> None:
    """Rootless: a child user namespace locks every mount made above, so even the
    namespace's root cannot unmount the tmpfs covering a hidden directory."""
    uid, gid = os.geteuid(), os.getegid()
    sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNS)
    with open("/proc/self/setgroups", "w") as handle:
        handle.write("deny")
    with open("/proc/self/uid_map", "w") as handle:
        handle.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as handle:
        handle.write(f"{gid} {gid} 1")


def _become_agent(spec: LaunchSpec) -> None:
    """Everything between fork and exec: signals, session, identity, privileges."""
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    os.setsid()
    if os.isatty(0):
        # `sandbox exec -t`: the terminal becomes the session's, so ^C and job control work.
        with contextlib.suppress(OSError):
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if spec.nested_user_namespace:
        # Init is not dumpable, which makes our /proc/self files root's; the uid map of the
        # new namespace must be writable by us. exec would reset this anyway.
        sc.prctl(sc.PR_SET_DUMPABLE, 1)
        _enter_nested_user_namespace()
    if spec.gid is not None:
        os.setgroups([])
        os.setresgid(spec.gid, spec.gid, spec.gid)
    if spec.uid is not None:
        os.setresuid(spec.uid, spec.uid, spec.uid)
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    try:
        os.chdir(spec.cwd)
    except OSError:
        os.chdir("/")
    os.closerange(3, 65536)


def _exec_agent(spec: LaunchSpec) -> None:
    """In the forked child: become the agent. Never returns."""
    try:
        _become_agent(spec)
    except BaseException as exc:
        os.write(2, f"sandbox: cannot prepare the agent: {exc}\n".encode())
        os._exit(126)
    try:
        os.execvpe(spec.argv[0], list(spec.argv), spec.env)  # noqa: S606
    except OSError as exc:
        os.write(2, f"sandbox: cannot run {spec.argv[0]}: {exc.strerror}\n".encode())
    os._exit(127)


class SignalRelay:
    """Passes termination signals on to one child process.

    Signals are blocked around ``fork`` (see :meth:`fork`), so one that arrives while the
    child is being created is delivered once the child's pid is known instead of being
    lost or, for PID 1 without a handler, silently ignored.
    """

    def __init__(self) -> None:
        self._target: int | None = None
        self._held: list[int] = []

    def install(self) -> None:
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self._target is None:
            self._held.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._target, signum)

    def fork(self) -> int:
        """``os.fork`` with forwarding switched to the child; the child gets default handlers
        (and any signal that arrived meanwhile) once it unblocks."""
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
            raise
        if pid == 0:
            self._target = None
            self._held = []
            return 0
        self._target = pid
        held, self._held = self._held, []
        for signum in held:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        return pid


def run_init(spec: LaunchSpec, relay: SignalRelay) -> int:
    """Build the sandbox, run the agent, reap every orphan; return the agent's status."""
    # Not dumpable: the agent (the same host uid when rootless) can neither ptrace init nor
    # read its /proc entries; its own exec resets this for the agent's processes.
    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    prepare_filesystem(spec)
    agent = relay.fork()
    if agent == 0:
        _exec_agent(spec)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        if pid == agent:
            return exit_status(status)


def main_in_child(spec: LaunchSpec, relay: SignalRelay) -> None:
    """Entry point for the forked PID-1 child (signals still blocked); never returns."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    try:
        code = run_init(spec, relay)
    except (OSError, SetupFailed) as exc:
        sys.stderr.write(f"sandbox: setup failed: {exc}\n")
        sys.stderr.flush()
        code = 125
    sys.stdout.flush()
    os._exit(code)
