"""The bench's port picks: one run never configures two servers on one port."""

from __future__ import annotations

from bench.peers.processes import free_port


def test_a_run_never_hands_out_the_same_port_twice() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
