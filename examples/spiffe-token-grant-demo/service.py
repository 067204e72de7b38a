"""A protected demo service (alpha or beta): accepts a request only with an access token
from the demo issuer whose audience and scope name this service, verified with the
issuer's published keys (no shared secret), and answers with the claims it received.

    python service.py --name alpha --listen 127.0.0.1:18081 \\
        --issuer-jwks http://127.0.0.1:18080/jwks

Every accepted request logs one proof-of-life line:
``alpha: accepted request GET /hello from spiffe://…/grantbox/sandbox/<id> scope=…``.
``GET /healthz`` needs no token.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from bearer_check import BearerRejected, ServicePolicy, bearer_token, check_access_token, token_kid
from key_set import KeySetError, KeySetSource, RefreshPolicy, key_set_http_client
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from workload_server import bind, loggable, parse_listen, serve, setup_logging

log = logging.getLogger("service")


class ProtectedService:
    def __init__(
        self,
        policy: ServicePolicy,
        issuer_keys: KeySetSource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self._keys = issuer_keys
        self._clock = clock

    @property
    def name(self) -> str:
        return self.policy.name

    async def handle(self, request: Request) -> Response:
        method, path = request.method, _log_path(request)
        try:
            token = bearer_token(request.headers.getlist("authorization"), self.name)
            keys = await self._keys.keys_for(token_kid(token, self.name))
            claims = check_access_token(token, keys, self.policy, self._clock())
        except BearerRejected as exc:
            log.warning(
                "%s: refused request %s %s: %d %s",
                self.name,
                method,
                path,
                exc.status,
                exc.description,
            )
            return JSONResponse(
                exc.body(),
                status_code=exc.status,
                headers={"WWW-Authenticate": exc.challenge},
            )
        except KeySetError:
            log.warning(
                "%s: refused request %s %s: issuer keys unavailable", self.name, method, path
            )
            return JSONResponse(
                {
                    "error": "temporarily_unavailable",
                    "error_description": "issuer keys unavailable",
                },
                status_code=503,
            )
        log.info(
            "%s: accepted request %s %s from %s scope=%s",
            self.name,
            method,
            path,
            claims.get("client_id", claims.get("sub")),
            claims.get("scope"),
        )
        return JSONResponse(
            {"service": self.name, "method": method, "path": request.url.path, "claims": claims}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every path is protected except ``GET /healthz``; no router, so no path (not
        even one with a decoded newline) escapes the token check."""
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if request.url.path == "/healthz" and request.method == "GET":
            response: Response = JSONResponse({"status": "ok"})
        else:
            response = await self.handle(request)
        await response(scope, receive, send)


def _log_path(request: Request) -> str:
    """The path as sent, still percent-encoded: no spaces or line breaks can reach the log,
    so a request path cannot imitate (or split) a proof-of-life line."""
    raw = request.scope.get("raw_path")
    text = raw.decode("ascii", "backslashreplace") if isinstance(raw, bytes) else "?"
    return loggable(text.replace(" ", "%20"))


def issuer_of(jwks_url: str) -> str:
    """The demo issuer publishes its keys at ``<issuer>/jwks``."""
    parts = urlsplit(jwks_url)
    return f"{parts.scheme}://{parts.netloc}"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--name", required=True, help="audience and scope this service needs")
    parser.add_argument("--listen", required=True, help="HOST:PORT (port 0: any)")
    parser.add_argument("--issuer-jwks", required=True, help="the issuer's JWKS URL")
    parser.add_argument("--issuer", help="expected iss (default: the JWKS URL's origin)")
    parser.add_argument("--leeway", type=float, default=0.0, help="clock skew allowed, seconds")
    parser.add_argument(
        "--parent-pid", type=int, help="exit when this process (the one that started us) is gone"
    )
    parser.add_argument(
        "--jwks-min-refresh",
        type=float,
        default=5.0,
        help="minimum seconds between two fetches of the issuer's keys",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging()
    sock = bind(*parse_listen(args.listen))
    policy = ServicePolicy(
        name=args.name, issuer=args.issuer or issuer_of(args.issuer_jwks), leeway=args.leeway
    )
    keys = KeySetSource(
        key_set_http_client(),
        jwks_url=args.issuer_jwks,
        policy=RefreshPolicy(min_interval=args.jwks_min_refresh),
    )
    log.info("%s: tokens from %s, audience and scope %s", policy.name, policy.issuer, policy.name)
    serve(ProtectedService(policy, keys), sock, policy.name, args.parent_pid)


if __name__ == "__main__":
    main()
