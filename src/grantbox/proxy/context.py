"""What every connection of one proxy shares, and the I/O behind the flow's commands.

:class:`ProxyContext` holds the compiled policy, the token source, resolver, CA, limits and
the recorder. Its methods carry out the commands of :mod:`.flow` that do not depend on one
connection's state: resolve a name, obtain a token, dial validated addresses, find the
program behind a connection. Each returns the flow's result value; none decides anything.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from grantbox.grants import GrantError, GrantFailure, error_for_reason
from grantbox.profiles import GrantBinding

from .destinations import IPAddress, ResolveError, Resolver
from .flow import Dialed, Granted, Grants, Resolved
from .limits import Limits
from .metrics import ProxyMetrics
from .policy import UNKNOWN_PROGRAM, CompiledPolicy, Program
from .programs import ProgramResolver
from .record import Recorder
from .streams import SocketStream
from .tls import InterceptionCA
from .tokens import TokenSource

log = logging.getLogger("grantbox.proxy")

# The default idle deadline under its old name (see relay.HEAD_TIMEOUT); never read here.
IDLE_TIMEOUT = Limits().idle_timeout


@dataclass(slots=True)
class ProxyContext:
    policy: CompiledPolicy
    tokens: TokenSource
    resolver: Resolver
    ca: InterceptionCA
    upstream_tls: ssl.SSLContext
    metrics: ProxyMetrics
    recorder: Recorder
    limits: Limits
    programs: ProgramResolver | None = None

    async def resolve(self, host: str, port: int) -> Resolved:
        try:
            async with asyncio.timeout(self.limits.resolve_timeout):
                addresses = await self.resolver.resolve(host, port)
        except (ResolveError, OSError, TimeoutError) as exc:
            return Resolved(error=str(exc) or type(exc).__name__)
        return Resolved(tuple(addresses))

    async def obtain(self, binding: GrantBinding) -> Granted:
        try:
            token = await self.tokens.obtain(binding)
        except GrantError as error:
            return Granted(error=error)
        except Exception as exc:  # a defect in the source still fails the request closed
            log.exception("token source failed unexpectedly for %s", binding.id)
            detail = f"unexpected {type(exc).__name__} from the token source"
            return Granted(error=error_for_reason(GrantFailure.TOKEN_ENDPOINT_ERROR, detail))
        return Granted(token.value)

    async def obtain_all(self, bindings: Sequence[GrantBinding]) -> Grants:
        """A token for each binding, asked for together (one binding, the usual case,
        without a task)."""
        if len(bindings) == 1:
            return Grants((await self.obtain(bindings[0]),))
        return Grants(tuple(await asyncio.gather(*(self.obtain(b) for b in bindings))))

    async def dial(
        self, host: str, port: int, addresses: Sequence[IPAddress], *, tls: bool
    ) -> tuple[SocketStream | None, Dialed]:
        """Connect to the first validated address that answers (never the name again)."""
        last: BaseException | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(self.limits.dial_timeout):
                    stream = await SocketStream.connect(
                        str(address),
                        port,
                        tls=self.upstream_tls if tls else None,
                        server_hostname=host if tls else None,
                    )
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                last = exc
                continue
            return stream, Dialed(address)
        return None, Dialed(error=f"{host}:{port} unreachable: {last!r}")

    async def identify(self, sock: socket.socket | None) -> Program:
        if self.programs is None:
            return UNKNOWN_PROGRAM
        try:
            return self.programs.identify(sock)
        except OSError as exc:
            log.info("could not identify the program behind a connection: %s", exc)
            return UNKNOWN_PROGRAM
