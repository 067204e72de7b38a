"""PID 1 of a sandbox: builds the agent's view of the system, then runs and reaps it.

Runs inside fresh mount and PID namespaces (and the sandbox network namespace) as the
namespace's root. It builds the agent a root of its own (see :mod:`.filesystem`: system
directories read-only, the policy's paths, private ``/tmp``, ``/dev`` and ``/proc``, and
nothing else of the host) and gives the sandbox a fresh session keyring. Then it forks the
agent, which drops to its unprivileged uid with ``no_new_privs``, takes its rlimits (where
no cgroup bounds it), Landlock and the seccomp filter, and execs. When the agent exits,
init exits with its status and the kernel kills whatever else is left in the PID
namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import signal
import sys
import termios

from . import filesystem, landlock, seccomp
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


class SetupFailed(RuntimeError):
    """The sandbox could not be built; nothing of the agent has run."""


def exit_status(wait_status: int) -> int:
    """Shell convention: the exit code, or 128 + signal number."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def prepare_filesystem(spec: LaunchSpec) -> None:
    """Build the agent's root and pivot into it; fails closed on anything unexpected."""
    for path in spec.hidden:
        if not os.path.isdir(path):
            raise SetupFailed(f"hidden directory {path} does not exist; refusing to start")
    uid = os.geteuid() if spec.uid is None else spec.uid
    gid = os.getegid() if spec.gid is None else spec.gid
    try:
        warnings = filesystem.build_root(
            read_only=spec.read_only,
            read_write=spec.read_write,
            hidden=spec.hidden,
            tmp_size=PRIVATE_TMP_SIZE,
            uid=uid,
            gid=gid,
            files=[(spec.ca_path[len(PRIVATE_TMP) + 1 :], spec.ca_pem)] if spec.ca_pem else [],
        )
    except filesystem.ViewRefused as exc:
        raise SetupFailed(str(exc)) from None
    for line in warnings:
        sys.stderr.write(f"sandbox: {line}\n")


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
    if spec.gid is not None:
        os.setgroups([])
        os.setresgid(spec.gid, spec.gid, spec.gid)
    if spec.uid is not None:
        os.setresuid(spec.uid, spec.uid, spec.uid)
    if spec.nested_user_namespace:
        # Init is not dumpable (and changing uid resets it), which makes our /proc/self
        # files root's; the uid map of the new namespace must be writable by us. exec
        # resets this anyway.
        sc.prctl(sc.PR_SET_DUMPABLE, 1)
        _enter_nested_user_namespace()
    if spec.max_processes is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (spec.max_processes, spec.max_processes))
    if spec.max_memory_bytes is not None:
        limit = spec.max_memory_bytes
        # DATA, not AS: runtimes reserve far more address space than they ever touch.
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    try:
        os.chdir(spec.cwd)
    except OSError:
        os.chdir("/")
    landlock.restrict(landlock.plan(spec.read_write), spec.landlock)
    os.closerange(3, 65536)
    # Last: from here on the agent cannot mount, trace, make namespaces or load BPF.
    seccomp.install()


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
    # A session keyring of its own: nothing the host or another sandbox keeps in theirs.
    sc.join_new_session_keyring()
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
    except (OSError, SetupFailed, landlock.LandlockUnavailable) as exc:
        sys.stderr.write(f"sandbox: setup failed: {exc}\n")
        sys.stderr.flush()
        code = 125
    sys.stdout.flush()
    os._exit(code)
