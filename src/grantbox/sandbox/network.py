"""The sandbox network: a namespace whose only reachable address is the proxy's listener.

A short-lived helper process unshares a network namespace (and, without root, a user
namespace that owns it), brings ``lo`` up, listens on ``127.0.0.1:<port>`` inside it and
hands three things back over a socketpair: the listening socket, and descriptors pinning
the namespaces. The namespace has no other interface, no route and no DNS, so the host's
loopback services, the token endpoint and the internet are simply not there; the proxy,
running in the supervisor, serves the listening socket. Closing the descriptors (and any
processes inside) frees the namespace; nothing is left in the host's network.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field

from . import syscalls as sc

DEFAULT_PROXY_PORT = 3128
_MAX_FDS = 3


@dataclass(slots=True)
class SandboxNetwork:
    """Descriptors that keep one sandbox network alive; ``close`` releases them."""

    listener: socket.socket
    net_fd: int
    user_fd: int | None
    port: int
    closed: bool = field(default=False)
    # Rootless with subordinate ids: the uid/gid the agent takes inside the namespace.
    agent_in_namespace: int | None = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.listener.close()
        os.close(self.net_fd)
        if self.user_fd is not None:
            os.close(self.user_fd)

    def pass_fds(self) -> tuple[int, ...]:
        return (self.net_fd,) if self.user_fd is None else (self.net_fd, self.user_fd)


class NetworkSetupFailed(RuntimeError):
    """The sandbox network could not be created; the message says which step failed."""


def create_sandbox_network(
    port: int = DEFAULT_PROXY_PORT,
    *,
    rootless: bool | None = None,
    timeout: float = 10.0,
    agent_ids: tuple[int, int] | None = None,
) -> SandboxNetwork:
    """Create a sandbox network with a listening socket on ``127.0.0.1:port`` inside it.

    Rootless, ``agent_ids`` (a subordinate uid and gid) are mapped to uid/gid 1 of the
    sandbox's user namespace, next to the operator as its root.
    """
    if rootless is None:
        rootless = os.geteuid() != 0
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours:
        try:
            argv = [sys.executable, "-I", "-m", "grantbox.sandbox.network"]
            argv += ["--reply-fd", str(theirs.fileno()), "--port", str(port)]
            if rootless:
                argv.append("--rootless")
                if agent_ids is not None:
                    argv += ["--agent-ids", f"{agent_ids[0]}:{agent_ids[1]}"]
            result = subprocess.run(
                argv,
                pass_fds=(theirs.fileno(),),
                env={},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        finally:
            theirs.close()
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip().splitlines()
            raise NetworkSetupFailed(detail[-1] if detail else "network helper failed")
        _msg, fds, _flags, _addr = socket.recv_fds(ours, 16, _MAX_FDS)
    if len(fds) != (3 if rootless else 2):
        for fd in fds:
            os.close(fd)
        raise NetworkSetupFailed("network helper returned an unexpected set of descriptors")
    listener = socket.socket(fileno=fds[0])
    listener.setblocking(False)
    return SandboxNetwork(
        listener=listener,
        net_fd=fds[1],
        user_fd=fds[2] if rootless else None,
        port=port,
        agent_in_namespace=1 if rootless and agent_ids is not None else None,
    )


def _write_map(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _map_with_helpers(child: int, agent_ids: tuple[int, int]) -> None:
    """Write a child's maps from this (the parent) namespace with the setuid helpers:
    root is the operator, uid/gid 1 the agent's subordinate ids."""
    uid, gid = os.geteuid(), os.getegid()
    for helper, own, sub in (("newuidmap", uid, agent_ids[0]), ("newgidmap", gid, agent_ids[1])):
        done = subprocess.run(
            [helper, str(child), "0", str(own), "1", "1", str(sub), "1"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            detail = done.stderr.strip().splitlines()
            raise OSError(f"{helper} refused: {detail[-1] if detail else done.returncode}")


def _unshare_rootless(agent_ids: tuple[int, int] | None) -> None:
    """Enter a new user and network namespace; return in the child that is inside it."""
    uid, gid = os.geteuid(), os.getegid()
    if agent_ids is None:
        sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNET)
        _write_map("/proc/self/setgroups", "deny")
        _write_map("/proc/self/uid_map", f"0 {uid} 1")
        _write_map("/proc/self/gid_map", f"0 {gid} 1")
        return
    # Only a process outside the namespace may map ids other than its own: fork, let the
    # child unshare, map it from here, and carry on in the child.
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        os.close(go_w)
        sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNET)
        os.write(ready_w, b"1")
        if os.read(go_r, 1) != b"1":
            os._exit(1)
        return
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError("the namespace child died before it was mapped")
        _map_with_helpers(child, agent_ids)
        os.write(go_w, b"1")
    finally:
        os.close(go_w)
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    sys.exit(code)


def _helper(reply_fd: int, port: int, rootless: bool, agent_ids: tuple[int, int] | None) -> None:
    if rootless:
        _unshare_rootless(agent_ids)
    else:
        sc.unshare(sc.CLONE_NEWNET)
    sc.bring_loopback_up()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    fds = [listener.fileno(), os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)]
    if rootless:
        fds.append(os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC))
    with socket.socket(fileno=reply_fd) as reply:
        socket.send_fds(reply, [b"ok"], fds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="grantbox-sandbox-network")
    parser.add_argument("--reply-fd", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rootless", action="store_true")
    parser.add_argument("--agent-ids", metavar="UID:GID")
    args = parser.parse_args(argv)
    agent_ids = None
    if args.agent_ids:
        uid_text, _sep, gid_text = args.agent_ids.partition(":")
        agent_ids = (int(uid_text), int(gid_text))
    try:
        _helper(args.reply_fd, args.port, args.rootless, agent_ids)
    except OSError as exc:
        step = "user namespace" if args.rootless else "network namespace"
        sys.stderr.write(f"cannot create the sandbox {step}: {exc}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
