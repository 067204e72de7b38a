from __future__ import annotations

import os
import socket

from grantbox.identity_agent import PeerCredentials
from grantbox.identity_agent.attestation import (
    Caller,
    CallerDirectory,
    autobound_name,
    read_peer_credentials,
)


def test_peer_credentials_come_from_the_kernel() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        creds = read_peer_credentials(left)
    assert creds == PeerCredentials(pid=os.getpid(), uid=os.geteuid(), gid=os.getegid())


def test_directory_knows_only_relayed_connections() -> None:
    directory = CallerDirectory()
    caller = Caller("s1", PeerCredentials(pid=10, uid=1000, gid=1000))
    directory.register("1a2b3", caller)
    assert directory.lookup("unix-abstract:1a2b3") == caller
    for peer in ("unix:", "unix:/tmp/x", "unix-abstract:zzzzz", "ipv4:127.0.0.1:5", "", "1a2b3"):
        assert directory.lookup(peer) is None
    directory.unregister("1a2b3")
    assert directory.lookup("unix-abstract:1a2b3") is None


def test_autobind_names_are_unique_and_printable() -> None:
    sockets = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(20)]
    try:
        for s in sockets:
            s.bind("")
        names = [autobound_name(s) for s in sockets]
    finally:
        for s in sockets:
            s.close()
    assert len(set(names)) == len(names)
    assert all(name.isprintable() and name for name in names)
