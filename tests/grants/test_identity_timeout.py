"""The engine's own bound on an SVID fetch: a Workload API socket that accepts and then
says nothing (a wedged agent) fails the grant as ``workload_identity_unavailable`` within
``identity_timeout``, however patient the Workload API client itself is configured."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from grantbox.grants import GrantEngine, WorkloadIdentityUnavailable
from grantbox.identity import WorkloadIdentityClient

from .bindings import make_binding


@pytest.fixture
async def silent_socket() -> AsyncIterator[Path]:
    """A unix socket whose server accepts connections and never writes a byte."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client hangs up

    with tempfile.TemporaryDirectory(prefix="gbx-wedged-") as directory:
        path = Path(directory) / "agent.sock"
        server = await asyncio.start_unix_server(hold, path=str(path))
        try:
            yield path
        finally:
            server.close()
            for writer in held:
                writer.close()


async def test_a_wedged_workload_api_fails_within_the_identity_timeout(
    silent_socket: Path,
) -> None:
    client = WorkloadIdentityClient(str(silent_socket), call_timeout=60.0, deadline=60.0)
    engine = GrantEngine(client, identity_timeout=0.5, registry=CollectorRegistry())
    started = time.monotonic()
    try:
        with pytest.raises(WorkloadIdentityUnavailable) as failure:
            await engine.obtain(make_binding(token_endpoint="http://127.0.0.1:9/token"))
    finally:
        await engine.aclose()
        await client.aclose()
    assert time.monotonic() - started < 10  # generous: the point is "not 60 s"
    assert "0.5 s" in failure.value.detail
