"""Real parts for proxy tests: loopback upstreams (plain, and TLS via trustme) and a proxy."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from tests.support.proxy_upstream import RecordingUpstream, running_upstream

LOOPBACK = ["127.0.0.1/32", "::1/128"]


@pytest.fixture(scope="session")
def upstream_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def upstream_ca_file(upstream_ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "upstream-ca.pem"
    upstream_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
async def plain_upstream() -> AsyncIterator[RecordingUpstream]:
    async with running_upstream() as upstream:
        yield upstream


@pytest.fixture
async def tls_upstream(upstream_ca: trustme.CA) -> AsyncIterator[RecordingUpstream]:
    cert = upstream_ca.issue_cert(
        "alpha.localhost", "beta.localhost", "alpha.test", "localhost", "127.0.0.1"
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    async with running_upstream(context) as upstream:
        yield upstream
