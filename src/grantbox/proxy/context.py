"""What every connection of one proxy shares: config, tokens, CA, resolver, sinks.

Also the two I/O steps every relay needs in the same form: resolve-and-validate a
destination, and dial one of the validated addresses (never the name again).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from grantbox.profiles import EffectiveConfig

from .answers import ErrorCode, ProxyAnswer
from .destinations import IPAddress, ResolveError, Resolver, validate_addresses
from .metrics import ProxyMetrics
from .streams import SocketStream
from .tls import InterceptionCA
from .tokens import TokenSource

log = logging.getLogger("grantbox.proxy")

EventSink = Callable[[dict[str, Any]], None]

DIAL_TIMEOUT = 10.0
RESOLVE_TIMEOUT = 10.0
# How long a kept-alive agent connection may sit idle between requests.
IDLE_TIMEOUT = 300.0
# How long one request head may take once its first byte has arrived (slowloris bound).
HEAD_TIMEOUT = 30.0


@dataclass(slots=True)
class ProxyContext:
    config: EffectiveConfig
    tokens: TokenSource
    resolver: Resolver
    ca: InterceptionCA
    upstream_tls: ssl.SSLContext
    metrics: ProxyMetrics
    sink: EventSink

    def emit(self, event: dict[str, Any]) -> None:
        try:
            self.sink(event)
        except Exception:  # a broken sink must not break traffic
            log.exception("OCSF event sink failed")

    async def destinations(
        self, host: str, port: int, allowed_ips: Sequence[str]
    ) -> tuple[IPAddress, ...]:
        """Resolve ``host`` and keep only addresses the endpoint may reach."""
        try:
            addresses = await asyncio.wait_for(self.resolver.resolve(host, port), RESOLVE_TIMEOUT)
        except (ResolveError, OSError, TimeoutError) as exc:
            raise ProxyAnswer(
                ErrorCode.UPSTREAM_UNREACHABLE, detail=f"{host} did not resolve: {exc}"
            ) from exc
        usable, problem = validate_addresses(addresses, allowed_ips)
        if problem is not None:
            raise ProxyAnswer(ErrorCode.SSRF_DENIED, detail=f"{host}: {problem}")
        return usable

    async def dial(
        self, host: str, port: int, addresses: Sequence[IPAddress], *, tls: bool
    ) -> tuple[SocketStream, IPAddress]:
        """Connect to the first validated address that answers."""
        last: BaseException | None = None
        for address in addresses:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        str(address),
                        port,
                        ssl=self.upstream_tls if tls else None,
                        server_hostname=host if tls else None,
                        limit=2**20,
                    ),
                    DIAL_TIMEOUT,
                )
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                last = exc
                continue
            return SocketStream(reader, writer), address
        raise ProxyAnswer(
            ErrorCode.UPSTREAM_UNREACHABLE, detail=f"{host}:{port} unreachable: {last}"
        )
