"""WebSocket from inside a real sandbox: a stdlib python3 client (the agent) opens a
WebSocket through its proxy - on the forward connection and inside a CONNECT tunnel - to an
echo server that records each handshake. The bound path's handshake carries the sandbox's
token (the agent's forged copy gone); another path's handshake carries none; frames flow."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox_stack import ALPHA, Stack, running_stack
from tests.support.websocket_peers import EchoServer, echo_server

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

# The agent: python3 with the standard library only, through $HTTP_PROXY.
CLIENT = r"""
import base64, os, socket, sys, urllib.parse

proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
host, port = "{alpha}", {port}


def handshake(sock, target):
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (f"GET {{target}} HTTP/1.1\r\nHost: {{host}}:{{port}}\r\nUpgrade: websocket\r\n"
         f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {{key}}\r\n"
         "Authorization: Bearer forged-by-the-agent\r\n\r\n").encode()
    )


def talk(sock, text):
    reader = sock.makefile("rb")
    status = reader.readline().split()[1].decode()
    while reader.readline() not in (b"\r\n", b""):
        pass
    if status != "101":
        return status, ""
    payload, mask = text.encode(), os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    first, second = reader.read(2)
    return status, reader.read(second & 0x7F).decode()


forward = socket.create_connection((proxy.hostname, proxy.port))
handshake(forward, f"http://{{host}}:{{port}}/ws/forward")
print("forward", *talk(forward, "via the forward proxy"))

tunnel = socket.create_connection((proxy.hostname, proxy.port))
tunnel.sendall(f"CONNECT {{host}}:{{port}} HTTP/1.1\r\nHost: {{host}}:{{port}}\r\n\r\n".encode())
answer = b""
while not answer.endswith(b"\r\n\r\n"):
    answer += tunnel.recv(1)
handshake(tunnel, "/ws/tunnel")
print("tunnel", *talk(tunnel, "inside a tunnel"))

unbound = socket.create_connection((proxy.hostname, proxy.port))
handshake(unbound, f"http://{{host}}:{{port}}/open/chat")
print("unbound", *talk(unbound, "no token here"))
"""


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    async with echo_server() as server:
        yield server


async def test_a_websocket_from_the_sandbox_gets_its_token_only_where_bound(
    stack: Stack, echo: EchoServer
) -> None:
    def gw(*args: str) -> Awaitable[Any]:
        return asyncio.to_thread(stack.gw.ok, *args)

    endpoint = {"host": ALPHA, "port": echo.port, "allowed_ips": ["127.0.0.1"]}
    profile = stack.profile()
    profile["endpoints"] = [{**endpoint, "path": "/ws/**"}]
    policy = {"network": [{"name": "echo", "endpoints": [endpoint]}]}
    await gw("profile", "import", "-f", stack.gw.write("alpha.yaml", profile))
    await gw("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    await gw(
        "sandbox", "create", "--name", "box", "--provider", "pa",
        "--policy", stack.gw.write("policy.yaml", policy),
    )  # fmt: skip
    script = CLIENT.format(alpha=ALPHA, port=echo.port)
    result = await asyncio.to_thread(
        stack.gw.run, "sandbox", "exec", "--name", "box", "--", "python3", "-c", script
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout.splitlines() == [
        "forward 101 via the forward proxy",
        "tunnel 101 inside a tunnel",
        "unbound 101 no token here",
    ]
    token = stack.issuer.issued[-1]
    by_target = {h.target: h.header("authorization") for h in echo.handshakes}
    assert by_target == {
        "/ws/forward": [f"Bearer {token}"],
        "/ws/tunnel": [f"Bearer {token}"],
        "/open/chat": ["Bearer forged-by-the-agent"],  # no binding: the agent's own header
    }
    assert echo.messages == ["via the forward proxy", "inside a tunnel", "no token here"]
