"""Descriptor exhaustion (review #12): ~20,000 idle connections to a sandbox's proxy used up
the supervisor's descriptors, so its own gateway connections failed and accept() tracebacks
flooded the log. The proxy now serves at most ``Limits.max_connections`` agent connections
(and never more than its descriptor limit allows after a reserve), answers the rest
``connection_limit_reached``, and logs accept() failures at most once per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grantbox.proxy import Limits
from grantbox.proxy.limits import cap_for
from tests.support.proxy_clients import curl, parse_replies, read_all
from tests.support.proxy_harness import RecordingTokens, endpoint, make_config, running_proxy
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK

CAP = 8
EXTRA = 6


def test_the_cap_leaves_the_reserve_free() -> None:
    limits = Limits(max_connections=10_000, reserved_descriptors=256)
    assert cap_for(1024, limits) == (1024 - 256) // 2
    assert cap_for(100_000, limits) == 10_000
    assert cap_for(100, limits) == 1  # never zero: one agent connection always fits


async def test_connections_past_the_cap_are_refused_and_the_proxy_recovers(
    plain_upstream: RecordingUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="grantbox.proxy")
    config = make_config(
        policy=[endpoint("alpha.localhost", plain_upstream.port, allowed_ips=LOOPBACK)]
    )
    limits = Limits(max_connections=CAP)
    async with running_proxy(config, RecordingTokens(), tmp_path, limits=limits) as rp:
        assert rp.proxy.connection_cap == CAP
        idle: list[asyncio.StreamWriter] = []
        try:
            for _ in range(CAP):
                _reader, writer = await asyncio.open_connection("127.0.0.1", rp.port)
                idle.append(writer)
            for _ in range(100):  # until the proxy has taken all of them on
                if rp.proxy.open_connections == CAP:
                    break
                await asyncio.sleep(0.02)
            assert rp.proxy.open_connections == CAP
            refusals = []
            for _ in range(EXTRA):
                reader, writer = await asyncio.open_connection("127.0.0.1", rp.port)
                refusals.append(await read_all(reader, timeout=5))
                writer.close()
        finally:
            for writer in idle:
                writer.close()
        for raw in refusals:
            (reply,) = parse_replies(raw)
            assert reply.status == 503 and reply.json()["error"] == "connection_limit_reached"
        assert rp.metric("grantbox_proxy_refused_connections_total") == EXTRA
        for _ in range(100):
            if rp.proxy.open_connections == 0:
                break
            await asyncio.sleep(0.02)
        served = await curl(f"http://alpha.localhost:{plain_upstream.port}/after", proxy=rp.url)
    assert served.status == 200
    warnings = [r for r in caplog.records if "connection refused" in r.getMessage()]
    assert len(warnings) == 1  # six refusals, one log line


FLOOD = textwrap.dedent(
    """
    import asyncio, resource, socket, sys
    from grantbox.proxy import EgressProxy, Limits
    from grantbox.profiles import SandboxPolicy, build_effective_config
    from tests.support.proxy_harness import RecordingTokens

    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    async def main():
        config = build_effective_config("s1", SandboxPolicy(), [])
        limits = Limits(max_connections=10_000, reserved_descriptors=0)
        proxy = EgressProxy(config, RecordingTokens(), events=lambda e: None, limits=limits)
        await proxy.start(tcp=("127.0.0.1", 0))
        port = proxy.tcp_address[1]
        # the rest of the process (a supervisor's files and sockets) uses up the descriptors
        held = []
        try:
            while True:
                held.append(open("/dev/null"))
        except OSError:
            for handle in held[-2:]:
                handle.close()
        print(port, flush=True)
        sys.stdin.readline()
        await asyncio.sleep(1.0)
        await proxy.stop()

    asyncio.run(main())
    """
)


async def test_accept_failures_are_logged_a_bounded_number_of_times(tmp_path: Path) -> None:
    """The proxy's process runs out of descriptors (limit 64, all but two taken by other
    work): accept() fails over and over, and the log says so a bounded number of times
    instead of a traceback per failure; the process stays up and stops cleanly."""
    root = Path(__file__).resolve().parents[2]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOD,
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdin is not None
    port = int(await asyncio.wait_for(process.stdout.readline(), 30))
    clients: list[asyncio.StreamWriter] = []
    try:
        for _ in range(150):  # bounded: more than the proxy's 64 descriptors
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                clients.append(writer)
        await asyncio.sleep(1.0)  # the proxy keeps failing to accept meanwhile
    finally:
        process.stdin.write(b"\n")
        await process.stdin.drain()
        for writer in clients:
            writer.close()
        _out, err = await asyncio.wait_for(process.communicate(), 30)
    text = err.decode(errors="replace")
    assert "Traceback" not in text
    assert 1 <= text.count("accepting an agent connection failed") <= 2, text[-2000:]
    assert process.returncode == 0, text[-2000:]


async def test_connections_reset_by_the_agent_never_log_a_traceback(
    plain_upstream: RecordingUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent that resets its connections (idle, mid-head, after a request) must not make
    the proxy write a traceback per connection: that is another way to flood the log."""
    caplog.set_level(logging.DEBUG, logger="grantbox.proxy")
    port = plain_upstream.port
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    request = f"GET http://alpha.localhost:{port}/ HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        for sent in (b"", request[:20], request):
            for _ in range(10):  # bounded
                sock = socket.create_connection(("127.0.0.1", rp.port))
                sock.sendall(sent)
                await asyncio.sleep(0.01 if sent is request else 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # RST
        for _ in range(200):
            if rp.proxy.open_connections == 0:
                break
            await asyncio.sleep(0.02)
        served = await curl(f"http://alpha.localhost:{port}/after", proxy=rp.url)
    assert served.status == 200
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
