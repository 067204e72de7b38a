"""Async SPIFFE Workload API client: the only way grantbox obtains its SVIDs.

The same code talks to SPIRE in a cluster and to the local identity agent on one machine.
It is built on py-spiffe's generated stubs over ``grpc.aio``: py-spiffe's own client is
blocking and insists that the socket exists at construction, while a supervisor may start
before its agent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from . import workload_api as wapi
from .errors import IdentityUnavailable
from .retry import Backoff, error_for_status, is_retryable, next_wait
from .socket_uri import ENDPOINT_ENV, parse_socket_uri, socket_from_environment
from .svid import JwtSvid, MalformedSvid, read_svid
from .x509_svid import MalformedX509Svid, X509Svid, read_x509_svid

log = logging.getLogger(__name__)

# Reconnect quickly when the socket appears: gRPC's default first backoff is a full second.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
)


class WorkloadIdentityClient:
    """Fetches JWT- and X.509-SVIDs from a Workload API endpoint, retrying within a deadline.

    ``socket`` accepts ``unix:/p``, ``unix:///p`` or ``/p``; None means
    ``SPIFFE_ENDPOINT_SOCKET``. The socket need not exist yet; the connection is made
    lazily and re-made as needed.
    """

    def __init__(
        self,
        socket: str | None = None,
        *,
        call_timeout: float = 5.0,
        deadline: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        if call_timeout <= 0 or deadline <= 0:
            raise ValueError("call_timeout and deadline must be positive")
        self._socket_path = parse_socket_uri(socket) if socket else socket_from_environment()
        self._call_timeout = call_timeout
        self._deadline = deadline
        self._backoff = backoff or Backoff()
        self._channel: grpc.aio.Channel | None = None
        self._closed = False

    @property
    def socket_path(self) -> str | None:
        return self._socket_path

    def __repr__(self) -> str:
        return f"WorkloadIdentityClient(socket={self._socket_path!r})"

    async def fetch_jwt_svid(self, audience: str) -> JwtSvid:
        """A fresh JWT-SVID for ``audience`` for this workload's default identity.

        Raises IdentityUnavailable or IdentityDenied (DESIGN §3.4) with a sanitised detail.
        """
        if not audience:
            raise ValueError("audience must not be empty")
        stub = self._stub()
        request = wapi.JWTSVIDRequest(audience=[audience])

        async def once(timeout: float) -> object:  # noqa: ASYNC109 (a gRPC deadline)
            return await stub.FetchJWTSVID(
                request, metadata=wapi.SECURITY_METADATA, timeout=timeout
            )

        response = await self._with_retries("jwt-svid", once)
        return self._first_svid(response, audience)

    async def fetch_x509_svid(self) -> X509Svid:
        """This workload's current X.509-SVID, its private key and the trust bundle.

        Reads the first message of ``FetchX509SVID`` (the agent's current SVID) and closes
        the stream: callers ask right before each use, so a rotated SVID is picked up then.
        Raises IdentityUnavailable or IdentityDenied like :meth:`fetch_jwt_svid`.
        """
        stub = self._stub()

        async def once(timeout: float) -> object:  # noqa: ASYNC109 (a gRPC deadline)
            call = stub.FetchX509SVID(
                wapi.X509SVIDRequest(), metadata=wapi.SECURITY_METADATA, timeout=timeout
            )
            try:
                return await call.read()
            finally:
                call.cancel()

        response = await self._with_retries("x509-svid", once)
        if response is grpc.aio.EOF:
            raise IdentityUnavailable(
                f"workload API at {self._socket_path} closed the X.509-SVID stream at once"
            )
        svids = list(getattr(response, "svids", ()))
        if not svids:
            raise IdentityUnavailable(f"workload API at {self._socket_path} returned no X.509-SVID")
        first = svids[0]
        try:
            return read_x509_svid(
                first.spiffe_id, first.x509_svid, first.x509_svid_key, first.bundle, time.time()
            )
        except MalformedX509Svid as exc:
            raise IdentityUnavailable(
                f"workload API at {self._socket_path} returned an unusable X.509-SVID: {exc}"
            ) from None

    def _stub(self) -> Any:
        if self._closed:
            raise IdentityUnavailable("workload identity client is closed")
        if self._socket_path is None:
            raise IdentityUnavailable(f"no workload API socket configured ({ENDPOINT_ENV} unset)")
        return wapi.WorkloadApiStub(self._ensure_channel(self._socket_path))

    async def _with_retries(self, what: str, once: Callable[[float], Awaitable[object]]) -> object:
        """Call ``once(timeout)`` until it answers, retrying what the spec says to retry
        within the deadline; the final failure is mapped to IdentityUnavailable/Denied."""
        assert self._socket_path is not None
        started = time.monotonic()
        attempt = 0
        while True:
            remaining = self._deadline - (time.monotonic() - started)
            try:
                return await once(max(min(self._call_timeout, remaining), 0.001))
            except grpc.aio.AioRpcError as exc:
                failure = error_for_status(exc.code().name, exc.details(), self._socket_path)
                remaining = self._deadline - (time.monotonic() - started)
                wait = next_wait(self._backoff, attempt, random.random(), remaining)  # noqa: S311
                if not is_retryable(exc.code().name) or wait is None:
                    log.warning(
                        f"{what} fetch failed",
                        extra={"fields": {"reason": failure.reason, "attempts": attempt + 1}},
                    )
                    raise failure from None
                attempt += 1
                await asyncio.sleep(wait)

    def _first_svid(self, response: object, audience: str) -> JwtSvid:
        svids = list(getattr(response, "svids", ()))
        if not svids:
            raise IdentityUnavailable(f"workload API at {self._socket_path} returned no JWT-SVID")
        try:
            return read_svid(svids[0].svid, audience, time.time())
        except MalformedSvid as exc:
            raise IdentityUnavailable(
                f"workload API at {self._socket_path} returned an unusable JWT-SVID: {exc}"
            ) from None

    def _ensure_channel(self, path: str) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(f"unix:{path}", options=_CHANNEL_OPTIONS)
        return self._channel

    async def aclose(self) -> None:
        """Close the connection; later fetches fail with IdentityUnavailable."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> WorkloadIdentityClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
