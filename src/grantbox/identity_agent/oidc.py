"""The trust domain's keys over HTTP, the two ways relying parties look for them.

* OIDC discovery, shaped like SPIRE's OIDC Discovery Provider:
  ``/.well-known/openid-configuration`` points to ``/keys``, a JWKS of the JWT-SVID signing
  keys with ``use: sig`` (what generic OIDC/JWT verifiers accept).
* A SPIFFE bundle endpoint at ``/bundle`` (SPIFFE Trust Domain and Bundle spec): the JWT
  bundle with ``use: jwt-svid`` keys plus ``spiffe_sequence`` and ``spiffe_refresh_hint``,
  which is what Keycloak's SPIFFE identity provider reads to trust a trust domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DISCOVERY_PATH = "/.well-known/openid-configuration"
KEYS_PATH = "/keys"
BUNDLE_PATH = "/bundle"
_NO_STORE = {"Cache-Control": "no-store"}


def discovery_document(issuer: str, jwks_uri: str, algorithms: list[str]) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": [],
        "id_token_signing_alg_values_supported": algorithms,
    }


def build_app(
    base_url: Callable[[], str],
    issuer: Callable[[], str],
    jwks: Callable[[], dict[str, Any]],
    algorithms: Callable[[], list[str]],
    bundle: Callable[[], bytes],
) -> Starlette:
    async def discovery(_: Request) -> JSONResponse:
        document = discovery_document(issuer(), base_url() + KEYS_PATH, algorithms())
        return JSONResponse(document, headers={"Cache-Control": "max-age=60"})

    async def keys(_: Request) -> JSONResponse:
        return JSONResponse(jwks(), headers={"Cache-Control": "max-age=60"})

    async def spiffe_bundle(_: Request) -> Response:
        # The refresh hint inside the document is the caching contract; keep HTTP caches out.
        return Response(bundle(), media_type="application/json", headers=_NO_STORE)

    return Starlette(
        routes=[
            Route(DISCOVERY_PATH, discovery),
            Route(KEYS_PATH, keys),
            Route(BUNDLE_PATH, spiffe_bundle),
        ],
    )


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the agent's owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class OidcServer:
    """Serves the discovery app on an already-bound socket, in the caller's event loop."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = _QuietServer(config)
        self._sock = sock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("OIDC discovery server exited during startup")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            self._sock.close()
            return
        self._server.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)
        self._sock.close()
