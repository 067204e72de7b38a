"""The CONNECT adapter: admit the tunnel, then look inside it or (``tls: skip``) pipe it.

An admitted tunnel to a ``tls: auto`` endpoint is terminated: if the agent starts TLS the
proxy presents a leaf for the CONNECT host and serves the decrypted requests with the
per-request relay; if it speaks plain HTTP the same relay serves it in cleartext. A
``tls: skip`` endpoint is a raw byte tunnel to a validated address: never parsed, never
given a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from grantbox.profiles import TlsMode

from .answers import CONNECT_ESTABLISHED, ErrorCode, ProxyAnswer
from .context import IDLE_TIMEOUT, ProxyContext, log
from .decision import authorize
from .events import NET_CLOSE, NET_FAIL, NET_OPEN, RequestFacts, http_decision, network_activity
from .framing import FramingError, RequestHead
from .relay import HttpRelay
from .rewrite import redact
from .streams import ByteStream, SocketStream, TlsServerStream
from .targets import Tunnel, connect_target

TLS_HANDSHAKE_RECORD = 0x16
HANDSHAKE_TIMEOUT = 30.0


async def serve_connect(
    ctx: ProxyContext, client: SocketStream, head: RequestHead, leftover: bytes, peer: str
) -> None:
    """Admit or refuse a CONNECT, then serve the tunnel it opens."""
    try:
        host, port = connect_target(head)
    except FramingError as exc:
        await _send(client, ProxyAnswer(ErrorCode.INVALID_REQUEST, detail=str(exc)).to_bytes())
        return
    facts = RequestFacts(
        method="CONNECT",
        scheme="https",
        host=host,
        port=port,
        path="",
        sandbox_id=ctx.config.sandbox_id,
        headers=redact((f.name, f.value) for f in head.fields),
        client=peer,
    )
    decision = authorize(
        ctx.config, method="CONNECT", host=host, port=port, path=None, scheme="https"
    )
    try:
        if not decision.allowed:
            assert decision.code is not None
            raise ProxyAnswer(decision.code, detail=decision.detail)
        # Validated now so a refused destination fails at CONNECT; every request inside an
        # inspected tunnel resolves and validates again before it is dialled.
        addresses = await ctx.destinations(host, port, decision.allowed_ips)
        upstream = None
        if decision.tls is TlsMode.SKIP:
            upstream, address = await ctx.dial(host, port, addresses, tls=False)
    except ProxyAnswer as answer:
        ctx.metrics.requests.labels("denied", str(answer.code)).inc()
        ctx.emit(
            http_decision(
                facts,
                allowed=False,
                code=str(answer.code),
                detail=answer.detail,
                entry=decision.entry,
            )
        )
        await _send(client, answer.to_bytes(f"{host}:{port}"))
        return
    ctx.metrics.requests.labels("allowed", "").inc()
    ctx.emit(http_decision(facts, allowed=True, entry=decision.entry))
    await client.send(CONNECT_ESTABLISHED)
    if upstream is not None:
        await _raw_tunnel(ctx, client, upstream, leftover, host, port, str(address), peer)
    else:
        await _inspected_tunnel(ctx, client, leftover, host, port, peer)


async def _raw_tunnel(
    ctx: ProxyContext,
    client: SocketStream,
    upstream: SocketStream,
    leftover: bytes,
    host: str,
    port: int,
    address: str,
    peer: str,
) -> None:
    """``tls: skip``: bytes both ways, never parsed, never given a token."""
    ctx.emit(
        network_activity(
            NET_OPEN,
            host=host,
            port=port,
            dst_ip=address,
            client=peer,
            message=f"raw tunnel to {host}:{port} (tls: skip)",
        )
    )
    sent, received = await pipe(ctx, client, upstream, leftover)
    ctx.emit(
        network_activity(
            NET_CLOSE,
            host=host,
            port=port,
            dst_ip=address,
            client=peer,
            message=f"raw tunnel to {host}:{port} closed",
            traffic={"bytes_out": sent, "bytes_in": received},
        )
    )


async def _inspected_tunnel(
    ctx: ProxyContext, client: SocketStream, leftover: bytes, host: str, port: int, peer: str
) -> None:
    """Terminate TLS if the agent starts it (else read plain HTTP) and relay per request."""
    try:
        first = leftover or await asyncio.wait_for(client.recv(), IDLE_TIMEOUT)
    except TimeoutError:
        return
    if not first:
        return
    if first[0] != TLS_HANDSHAKE_RECORD:
        await HttpRelay(
            ctx, client, tunnel=Tunnel(host, port, "http"), buffer=first, peer=peer
        ).run()
        return
    tls = TlsServerStream(client, ctx.ca.server_context(host), first)
    try:
        await asyncio.wait_for(tls.handshake(), HANDSHAKE_TIMEOUT)
    except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
        ctx.emit(
            network_activity(
                NET_FAIL,
                host=host,
                port=port,
                client=peer,
                allowed=False,
                message=f"TLS handshake with the agent for {host} failed: {exc}",
            )
        )
        log.info("TLS handshake for %s failed: %s", host, exc)
        return
    try:
        await HttpRelay(ctx, tls, tunnel=Tunnel(host, port, "https"), peer=peer).run()
    finally:
        await tls.close()


async def pipe(
    ctx: ProxyContext, client: SocketStream, upstream: SocketStream, leftover: bytes
) -> tuple[int, int]:
    """Copy bytes both ways until both sides are done; returns (sent up, received)."""
    counts = [0, 0]

    async def copy(src: ByteStream, dst: SocketStream, index: int, direction: str) -> None:
        try:
            while True:
                data = await src.recv()
                if not data:
                    break
                counts[index] += len(data)
                ctx.metrics.bytes.labels(direction).inc(len(data))
                await dst.send(data)
        except (OSError, ConnectionError):
            pass
        finally:
            await dst.write_eof()

    try:
        if leftover:
            counts[0] += len(leftover)
            await upstream.send(leftover)
        await asyncio.gather(
            copy(client, upstream, 0, "upstream"), copy(upstream, client, 1, "downstream")
        )
    finally:
        await upstream.close()
    return counts[0], counts[1]


async def _send(client: ByteStream, data: bytes) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        await client.send(data)
