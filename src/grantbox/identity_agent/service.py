"""The SpiffeWorkloadAPI gRPC service of the local identity agent (JWT and X.509 profiles)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf import struct_pb2  # type: ignore[import-untyped]

from grantbox.identity import workload_api as wapi

from .attestation import CallerDirectory
from .authority import Authority
from .jwt_svid import InvalidSvid
from .registry import Registration, caller_allowed
from .x509_authority import X509Authority

log = logging.getLogger(__name__)

Context: TypeAlias = Any
"""grpc.aio.ServicerContext; grpcio ships no type information."""

MIN_STREAM_PAUSE = 0.05
BUNDLE_POLL_SECONDS = 60.0
"""The X.509 bundle changes only when the agent restarts with a renewed CA; a stream checks
now and then rather than holding a notification channel for it."""


class WorkloadApiService(wapi.WorkloadApiServicer):  # type: ignore[misc]
    """Answers Workload API calls for the caller the attestation relay identified."""

    def __init__(
        self,
        authority: Authority,
        directory: CallerDirectory,
        registrations: Callable[[], Mapping[str, Registration]],
        x509: X509Authority,
    ) -> None:
        self._authority = authority
        self._x509 = x509
        self._directory = directory
        self._registrations = registrations

    async def _abort(self, context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
        await context.abort(code, message)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _check_header(self, context: Context) -> None:
        """SSRF guard of the Workload Endpoint spec: no header, no answer."""
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        if metadata.get(wapi.SECURITY_HEADER) != wapi.SECURITY_HEADER_VALUE:
            await self._abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request"
            )

    async def _attested(self, context: Context, rpc: str) -> Registration:
        """Check the security header, then that the caller is entitled to the socket's ID."""
        await self._check_header(context)
        caller = self._directory.lookup(context.peer())
        registration = self._registrations().get(caller.workload) if caller else None
        if caller is None or registration is None:
            log.warning("workload api call denied", extra={"fields": {"rpc": rpc, "caller": None}})
            await self._abort(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        if not caller_allowed(registration, caller.credentials):
            fields = {
                "rpc": rpc,
                "workload": caller.workload,
                "uid": caller.credentials.uid,
                "pid": caller.credentials.pid,
            }
            log.warning("workload api call denied", extra={"fields": fields})
            await self._abort(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        return registration

    async def FetchJWTSVID(self, request: Any, context: Context) -> Any:
        registration = await self._attested(context, "FetchJWTSVID")
        audiences = [a for a in request.audience]
        if not audiences or any(not a for a in audiences):
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, "audience is required")
        if request.spiffe_id and request.spiffe_id != registration.spiffe_id:
            await self._abort(
                context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued for that SPIFFE ID"
            )
        token, expires_at = self._authority.issue(registration.spiffe_id, audiences, time.time())
        log.info(
            "jwt-svid issued",
            extra={
                "fields": {
                    "workload": registration.name,
                    "spiffe_id": registration.spiffe_id,
                    "audience": audiences,
                    "expires_at": expires_at,
                }
            },
        )
        return wapi.JWTSVIDResponse(
            svids=[wapi.JWTSVID(spiffe_id=registration.spiffe_id, svid=token)]
        )

    async def FetchJWTBundles(self, request: Any, context: Context) -> AsyncIterator[Any]:
        await self._attested(context, "FetchJWTBundles")
        seen = -1
        while True:
            current = self._authority.sequence
            if current != seen:
                seen = current
                bundles = {self._authority.trust_domain_id: self._authority.jwt_bundle()}
                yield wapi.JWTBundlesResponse(bundles=bundles)
            await self._authority.wait_for_change(seen)

    async def ValidateJWTSVID(self, request: Any, context: Context) -> Any:
        await self._attested(context, "ValidateJWTSVID")
        if not request.audience:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, "audience is required")
        if not request.svid:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, "svid is required")
        try:
            claims = self._authority.validate(request.svid, request.audience)
        except InvalidSvid as exc:
            await self._abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"could not validate JWT-SVID: {exc}"
            )
        struct = struct_pb2.Struct()
        struct.update(claims)
        return wapi.ValidateJWTSVIDResponse(spiffe_id=str(claims["sub"]), claims=struct)

    async def FetchX509SVID(self, request: Any, context: Context) -> AsyncIterator[Any]:
        """The caller's X.509-SVID now, and again each time it is rotated (full state)."""
        registration = await self._attested(context, "FetchX509SVID")
        while True:
            now = time.time()
            svid = self._x509.svid_for(registration.spiffe_id, now)
            log.info(
                "x509-svid sent",
                extra={
                    "fields": {
                        "spiffe_id": registration.spiffe_id,
                        "serial": f"{svid.certificate.serial_number:x}",
                        "expires_at": svid.expires_at,
                    }
                },
            )
            yield wapi.X509SVIDResponse(
                svids=[
                    wapi.X509SVID(
                        spiffe_id=registration.spiffe_id,
                        x509_svid=svid.chain_der(),
                        x509_svid_key=svid.key_der(),
                        bundle=self._x509.bundle_der(),
                    )
                ]
            )
            await asyncio.sleep(max(MIN_STREAM_PAUSE, svid.rotate_at - time.time()))
            if self._registrations().get(registration.name) != registration:
                await self._abort(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")

    async def FetchX509Bundles(self, request: Any, context: Context) -> AsyncIterator[Any]:
        await self._attested(context, "FetchX509Bundles")
        seen = b""
        while True:
            bundle = self._x509.bundle_der()
            if bundle != seen:
                seen = bundle
                yield wapi.X509BundlesResponse(bundles={self._authority.trust_domain_id: bundle})
            await asyncio.sleep(BUNDLE_POLL_SECONDS)
