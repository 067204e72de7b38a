"""A real gateway on a free loopback port, and the real ``grantbox`` command pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from grantbox.gateway import GatewayServer
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import gateway_settings, serving
from tests.support.grantbox_command import Grantbox


@pytest.fixture
def driver() -> RecordingDriver:
    return RecordingDriver()


@pytest.fixture
def server(tmp_path: Path, driver: RecordingDriver) -> Iterator[GatewayServer]:
    with serving(gateway_settings(tmp_path, longpoll_max=5.0), driver) as running:
        yield running


@pytest.fixture
def gb(server: GatewayServer, tmp_path: Path) -> Grantbox:
    return Grantbox(
        env={
            "GRANTBOX_GATEWAY": server.url,
            "GRANTBOX_TOKEN": server.operator_token,
            "GRANTBOX_CONFIG_DIR": str(tmp_path / "cli-config"),
            "GRANTBOX_STATE_DIR": str(tmp_path / "cli-state"),
        }
    )
