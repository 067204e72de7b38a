"""Fixtures for sandbox tests: a real sandbox network and a way to run commands in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from grantbox.sandbox.network import SandboxNetwork, create_sandbox_network
from tests.support.sandbox_run import SandboxRunner


@pytest.fixture
def sandbox_network() -> Iterator[SandboxNetwork]:
    network = create_sandbox_network(3128, rootless=False)
    try:
        yield network
    finally:
        network.close()


@pytest.fixture
def runner(sandbox_network: SandboxNetwork) -> SandboxRunner:
    return SandboxRunner(sandbox_network)


@pytest.fixture
def rootless_runner() -> Iterator[SandboxRunner]:
    """The user-namespace path (as used without root), exercised by root."""
    network = create_sandbox_network(3128, rootless=True)
    try:
        yield SandboxRunner(network)
    finally:
        network.close()
