"""The bridge process between the supervisor and a sandbox's PID 1.

``python -m grantbox.sandbox.stage`` is started by the supervisor with the sandbox's
namespace descriptors. It is single-threaded, so it may join a user namespace. It joins the
sandbox's cgroup (so everything it starts is bounded from the first fork), arranges
to die with the supervisor (``PR_SET_PDEATHSIG``), joins the sandbox's user (rootless) and
network namespaces, unshares mount, PID and IPC namespaces, and forks the sandbox init, which is
PID 1 there and in turn dies with this stage: kill the supervisor and the whole PID
namespace goes with it. The stage relays signals to init and exits with init's status.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from . import limits
from . import syscalls as sc
from .init import SignalRelay, exit_status, main_in_child
from .spec import MAX_SPEC_BYTES, LaunchSpec


def _read_spec(fd: int) -> LaunchSpec:
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
        total += len(chunk)
        if total > MAX_SPEC_BYTES:
            raise ValueError("launch spec is too large")
    os.close(fd)
    return LaunchSpec.from_bytes(b"".join(chunks))


def _parent_still_alive(alive_fd: int) -> bool:
    """True while the stage holds the write end of the pipe open."""
    os.set_blocking(alive_fd, False)
    try:
        return os.read(alive_fd, 1) != b""
    except BlockingIOError:
        return True


def run_stage(spec: LaunchSpec, net_fd: int, user_fd: int | None) -> int:
    # Into the sandbox's cgroup before anything forks, while still the host's user.
    limits.join(spec.cgroup_procs)
    if user_fd is not None:
        sc.setns(user_fd, sc.CLONE_NEWUSER)
        os.close(user_fd)
    sc.setns(net_fd, sc.CLONE_NEWNET)
    os.close(net_fd)
    sc.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWIPC)
    alive_r, alive_w = os.pipe()
    relay = SignalRelay()
    relay.install()
    child = relay.fork()
    if child == 0:
        os.close(alive_w)
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if not _parent_still_alive(alive_r):
            os._exit(1)
        os.close(alive_r)
        main_in_child(spec, relay)
    os.close(alive_r)
    while True:
        pid, status = os.waitpid(child, 0)
        if pid == child:
            return exit_status(status)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="grantbox-sandbox-stage")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--spec-fd", type=int, required=True)
    parser.add_argument("--net-fd", type=int, required=True)
    parser.add_argument("--user-fd", type=int)
    args = parser.parse_args(argv)
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != args.parent:
        sys.exit(125)
    try:
        spec = _read_spec(args.spec_fd)
        code = run_stage(spec, args.net_fd, args.user_fd)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"sandbox: cannot enter the sandbox: {exc}\n")
        code = 125
    sys.exit(code)


if __name__ == "__main__":
    main()
