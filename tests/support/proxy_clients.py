"""Clients that talk to the proxy the way agents do: curl, raw bytes, raw bytes in a tunnel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class CurlResult:
    code: int
    status: int
    body: bytes
    stderr: str

    def json(self) -> Any:
        return json.loads(self.body)


async def curl(
    *args: str,
    proxy: str,
    cacert: Path | None = None,
    timeout: float = 30,
    via_environment: bool = False,
) -> CurlResult:
    """Run curl through the proxy (async, so in-loop servers keep serving): with ``-x``, or
    with ``via_environment`` the way agents are configured, HTTP_PROXY/HTTPS_PROXY and
    CURL_CA_BUNDLE."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    command = ["curl", "-sS", "--max-time", str(timeout), "-w", "\n%{http_code}"]
    if via_environment:
        env.update({"http_proxy": proxy, "HTTPS_PROXY": proxy})
        if cacert is not None:
            env["CURL_CA_BUNDLE"] = str(cacert)
    else:
        command += ["-x", proxy]
        if cacert is not None:
            command += ["--cacert", str(cacert)]
    process = await asyncio.create_subprocess_exec(
        *command,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout + 10)
    body, _, status = out.rpartition(b"\n")
    return CurlResult(process.returncode or 0, int(status or 0), body, err.decode())


def parse_replies(raw: bytes, methods: Sequence[bytes] = ()) -> list[Reply]:
    """Every complete response in ``raw`` (one per request method given, default GET)."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(raw)
    conn.receive_data(b"")
    replies: list[Reply] = []
    for method in methods or [b"GET"] * 16:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        status, headers, body = 0, [], bytearray()
        try:
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Response):
                    status = event.status_code
                    headers = [(n.decode(), v.decode()) for n, v in event.headers.raw_items()]
                elif isinstance(event, h11.Data):
                    body.extend(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                    return replies
        except h11.ProtocolError:
            return replies
        replies.append(Reply(status, headers, bytes(body)))
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return replies
        conn.start_next_cycle()
    return replies


async def read_all(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    chunks = []
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while True:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


async def read_reply(reader: asyncio.StreamReader, timeout: float = 10) -> Reply:
    """One response from a kept-alive connection (Content-Length framed)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
    length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
    body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    return Reply(status, [(n, v) for n, v in headers], body)


@contextlib.asynccontextmanager
async def connection(
    proxy_port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def send_raw(proxy_port: int, data: bytes) -> bytes:
    """Send bytes on a forward connection and read until the proxy closes it."""
    async with connection(proxy_port) as (reader, writer):
        writer.write(data)
        await writer.drain()
        return await read_all(reader)


@contextlib.asynccontextmanager
async def tunnel(
    proxy_port: int, host: str, port: int, ca_file: Path | None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """CONNECT through the proxy, then TLS (trusting ``ca_file``) unless it is None."""
    async with connection(proxy_port) as (reader, writer):
        writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        if ca_file is not None:
            context = ssl.create_default_context(cafile=str(ca_file))
            await writer.start_tls(context, server_hostname=host)
        yield reader, writer
