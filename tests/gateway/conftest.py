from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from grantbox.gateway import GatewayServer
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_postgres import postgres_server
from tests.support.gateway_server import GatewayCli, gateway_settings, serving


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One PostgreSQL server for the whole run (skips when the binaries are absent)."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def driver() -> RecordingDriver:
    return RecordingDriver()


@pytest.fixture
def server(tmp_path: Path, driver: RecordingDriver) -> Iterator[GatewayServer]:
    with serving(gateway_settings(tmp_path), driver) as running:
        yield running


@pytest.fixture
def gw(server: GatewayServer, tmp_path: Path) -> GatewayCli:
    return GatewayCli(server.url, server.operator_token, tmp_path)
