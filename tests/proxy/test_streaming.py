"""Bodies stream through the relay: a 100 MB upload passes with bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from tests.support.proxy_clients import curl
from tests.support.proxy_harness import (
    RecordingTokens,
    endpoint,
    grant_profile,
    make_config,
    running_proxy,
)
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK

SIZE = 100 * 1024 * 1024
# Proxy and upstream run in this process; curl reads the file itself. Buffering the body
# anywhere would add at least 100 MB.
RSS_GROWTH_LIMIT = 50 * 1024 * 1024


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 100 MB file of varied bytes (so digests catch any corruption), and its sha256."""
    path = tmp_path_factory.mktemp("upload") / "payload.bin"
    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    with path.open("wb") as handle:
        for index in range(SIZE // len(block)):
            chunk = bytes([index % 251]) + block[1:]
            handle.write(chunk)
            digest.update(chunk)
    return path, digest.hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_100_mb_upload_streams_with_bounded_memory(
    scheme: str,
    plain_upstream: RecordingUpstream,
    tls_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    payload: tuple[Path, str],
    tmp_path: Path,
) -> None:
    upstream = tls_upstream if scheme == "https" else plain_upstream
    payload_file, expected = payload
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", upstream.port, allowed_ips=LOOPBACK)]
    )
    config = make_config(providers=[("alpha", profile)])
    async with running_proxy(
        config, RecordingTokens(token="up"), tmp_path, upstream_ca_file=upstream_ca_file
    ) as rp:
        baseline = _rss()
        peak = baseline
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss())
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        result = await curl(
            "--data-binary",
            f"@{payload_file}",
            "-H",
            "Content-Type: application/octet-stream",
            f"{scheme}://alpha.localhost:{upstream.port}/upload",
            proxy=rp.url,
            cacert=rp.ca_file,
            timeout=90,
        )
        done.set()
        await sampler
    assert result.status == 200, [e.get("status_detail") for e in rp.events]
    (seen,) = upstream.requests
    assert seen.body_bytes == SIZE and seen.sha256 == expected
    assert seen.header("authorization") == ["Bearer up"]
    assert peak - baseline < RSS_GROWTH_LIMIT, f"RSS grew by {(peak - baseline) >> 20} MB"
    assert rp.metric("grantbox_proxy_bytes_total", direction="upstream") == SIZE


@pytest.mark.slow
async def test_100_mb_download_streams_with_bounded_memory(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    profile = grant_profile("alpha", [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    async with running_proxy(
        make_config(providers=[("alpha", profile)]), RecordingTokens(), tmp_path
    ) as rp:
        baseline = _rss()
        peak = baseline
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss())
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        result = await curl(
            "-o",
            "/dev/null",
            f"http://alpha.localhost:{port}/download/{SIZE}",
            proxy=rp.url,
            timeout=90,
        )
        done.set()
        await sampler
    assert result.status == 200 and result.code == 0, result.stderr
    assert rp.metric("grantbox_proxy_bytes_total", direction="downstream") == SIZE
    assert peak - baseline < RSS_GROWTH_LIMIT, f"RSS grew by {(peak - baseline) >> 20} MB"
