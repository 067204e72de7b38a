"""The CONNECT adapter: carry out an admitted CONNECT - look inside it, or pipe it.

The CONNECT itself was decided (and recorded) by its flow like any request. An admitted
tunnel to a ``tls: auto`` endpoint is terminated: if the agent starts TLS the proxy presents
a leaf for the CONNECT host and serves the decrypted requests with the per-request relay; if
it speaks plain HTTP the same relay serves it in cleartext. A ``tls: skip`` endpoint is a
raw byte tunnel to the validated address the flow dialled: never parsed, never given a
token.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from prometheus_client import Counter

from .answers import CONNECT_ESTABLISHED
from .context import ProxyContext, log
from .flow import Forward
from .relay import AgentConnection, HttpRelay
from .streams import ByteStream, SocketStream, TlsServerStream
from .targets import Tunnel

TLS_HANDSHAKE_RECORD = 0x16


async def serve_tunnel(
    ctx: ProxyContext,
    client: SocketStream,
    agent: AgentConnection,
    outcome: Forward,
    upstream: SocketStream | None,
    leftover: bytes,
) -> None:
    """Open the tunnel an admitted CONNECT asked for (``upstream``: the raw tunnel's
    dialled connection)."""
    facts = outcome.facts
    try:
        await client.send(CONNECT_ESTABLISHED)
    except (OSError, ConnectionError):
        if upstream is not None:
            await upstream.close()
        return
    if upstream is not None:
        await pipe(ctx, client, upstream, leftover)
    else:
        await _inspected_tunnel(ctx, client, agent, leftover, facts.host, facts.port)


async def _inspected_tunnel(
    ctx: ProxyContext,
    client: SocketStream,
    agent: AgentConnection,
    leftover: bytes,
    host: str,
    port: int,
) -> None:
    """Terminate TLS if the agent starts it (else read plain HTTP) and relay per request."""
    try:
        async with asyncio.timeout(ctx.limits.idle_timeout):
            first = leftover or await client.recv()
    except TimeoutError:
        return
    if not first:
        return
    if first[0] != TLS_HANDSHAKE_RECORD:
        relay = HttpRelay(ctx, client, agent, tunnel=Tunnel(host, port, "http"), buffer=first)
        await relay.run()
        return
    tls = TlsServerStream(client, ctx.ca.server_context(host), first)
    try:
        async with asyncio.timeout(ctx.limits.handshake_timeout):
            await tls.handshake()
    except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
        log.info("TLS handshake with the agent for %s failed: %s", host, exc)
        return
    try:
        await HttpRelay(ctx, tls, agent, tunnel=Tunnel(host, port, "https")).run()
    finally:
        await tls.close()


async def pipe(
    ctx: ProxyContext, client: SocketStream, upstream: SocketStream, leftover: bytes
) -> tuple[int, int]:
    """Copy bytes both ways until both sides are done; returns (sent up, received)."""
    counts = [0, 0]

    async def copy(src: ByteStream, dst: SocketStream, index: int, metric: Counter) -> None:
        try:
            while True:
                data = await src.recv()
                if not data:
                    break
                counts[index] += len(data)
                metric.inc(len(data))
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
            copy(client, upstream, 0, ctx.metrics.upstream_bytes),
            copy(upstream, client, 1, ctx.metrics.downstream_bytes),
        )
    finally:
        with contextlib.suppress(OSError, ConnectionError):
            await upstream.close()
    return counts[0], counts[1]
