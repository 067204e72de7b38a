"""The demo token issuer: an OAuth token endpoint that authenticates clients by their
SPIFFE JWT-SVID (IETF SPIFFE client-authentication draft, ``jwt-spiffe`` assertion type)
and issues ES256 access tokens for the audiences it serves.

    python issuer.py --listen 127.0.0.1:18080 --oidc-discovery http://127.0.0.1:PORT \\
        --trust-domain grantbox.local --path-prefix /grantbox/sandbox/

Endpoints: ``POST /token``, ``GET /jwks`` (its public key),
``GET /.well-known/oauth-authorization-server``, ``GET /stats`` (request counters),
``GET /healthz``. Logs name clients and outcomes, never tokens or assertions.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from key_set import KeySetError, KeySetSource, RefreshPolicy, key_set_http_client
from spiffe_assertion import (
    AssertionPolicy,
    AssertionRejected,
    SpiffeClient,
    read_header,
    verify_assertion,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from token_request import (
    OAuthError,
    TokenRequest,
    access_token_claims,
    check_client_id,
    check_grant,
    invalid_client,
    parse_form,
    read_token_request,
    token_response,
)
from workload_server import base_url, bind, loggable, parse_listen, serve, setup_logging

NAME = "issuer"
MAX_BODY_BYTES = 64 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

log = logging.getLogger(NAME)


@dataclass(frozen=True)
class IssuerConfig:
    issuer: str
    """This issuer's identifier: the ``iss`` of its tokens and the SVID audience it accepts."""
    audiences: tuple[str, ...]
    policy: AssertionPolicy
    lifetime: int = 300


class AccessTokenSigner:
    """An ES256 key made at start-up; only its public half ever leaves the process."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.kid = secrets.token_urlsafe(16)

    def __repr__(self) -> str:
        return f"AccessTokenSigner(kid={self.kid!r})"

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self._key, algorithm="ES256", headers={"kid": self.kid, "typ": "at+jwt"}
        )

    def jwks(self) -> dict[str, Any]:
        jwk = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "ES256"}]}


class TokenIssuer:
    def __init__(
        self,
        config: IssuerConfig,
        svid_keys: KeySetSource,
        signer: AccessTokenSigner,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._svid_keys = svid_keys
        self._signer = signer
        self._clock = clock
        self.token_requests = 0
        self.issued = 0

    async def token(self, request: Request) -> Response:
        self.token_requests += 1
        try:
            grant = await self._grant(request)
        except OAuthError as exc:
            log.warning(
                "%s: refused token request: %s (%s)",
                NAME,
                exc.error,
                loggable(exc.description),
            )
            headers = dict(NO_STORE)
            return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
        claims, client = grant
        access_token = self._signer.sign(claims)
        self.issued += 1
        log.info(
            "%s: issued token aud=%s scope=%r client=%s jti=%s",
            NAME,
            claims["aud"][0],
            claims["scope"],
            client.spiffe_id,
            claims["jti"],
        )
        body = token_response(access_token, claims, self.config.lifetime)
        return JSONResponse(body, headers=NO_STORE)

    async def _grant(self, request: Request) -> tuple[dict[str, Any], SpiffeClient]:
        body = await _read_body(request)
        fields = parse_form(request.headers.get("content-type"), body)
        token_request = read_token_request(
            fields, basic_auth=bool(request.headers.getlist("authorization"))
        )
        client = await self._authenticate(token_request)
        check_client_id(token_request, client)
        check_grant(token_request, self.config.audiences)
        claims = access_token_claims(
            token_request,
            client,
            issuer=self.config.issuer,
            issued_at=int(self._clock()),
            lifetime=self.config.lifetime,
            jti=secrets.token_urlsafe(16),
        )
        return claims, client

    async def _authenticate(self, token_request: TokenRequest) -> SpiffeClient:
        try:
            header = read_header(token_request.assertion)
            keys = await self._svid_keys.keys_for(header.kid)
            return verify_assertion(
                token_request.assertion, keys, self.config.policy, self._clock()
            )
        except AssertionRejected as exc:
            raise invalid_client(exc.reason) from None
        except KeySetError:
            raise OAuthError(
                "temporarily_unavailable", "the trust domain's keys are unavailable", 503
            ) from None

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(self._signer.jwks())

    async def metadata(self, request: Request) -> Response:
        issuer = self.config.issuer
        return JSONResponse(
            {
                "issuer": issuer,
                "token_endpoint": f"{issuer}/token",
                "jwks_uri": f"{issuer}/jwks",
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": sorted(
                    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}
                    | {"PS256", "PS384", "PS512"}
                ),
            }
        )

    async def stats(self, request: Request) -> Response:
        return JSONResponse({"token_requests": self.token_requests, "issued": self.issued})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self.token, methods=["POST"]),
                Route("/jwks", self.jwks, methods=["GET"]),
                Route("/.well-known/oauth-authorization-server", self.metadata, methods=["GET"]),
                Route("/stats", self.stats, methods=["GET"]),
                Route("/healthz", healthz, methods=["GET"]),
            ],
            exception_handlers={HTTPException: json_http_error},  # type: ignore[dict-item]
        )


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise OAuthError("invalid_request", "the request body is too large", 413)
    return bytes(body)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def json_http_error(request: Request, exc: HTTPException) -> Response:
    """404/405 as JSON, like every other answer of the demo workloads."""
    return JSONResponse(
        {"error": "not_found" if exc.status_code == 404 else "invalid_request"},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--listen", default="127.0.0.1:18080", help="HOST:PORT (port 0: any)")
    parser.add_argument(
        "--oidc-discovery",
        required=True,
        help="the identity agent's OIDC discovery URL (base or .well-known document)",
    )
    parser.add_argument(
        "--oidc-ca-file", help="CA bundle for an https discovery endpoint with a private CA"
    )
    parser.add_argument("--trust-domain", required=True)
    parser.add_argument("--path-prefix", default="/grantbox/sandbox/")
    parser.add_argument(
        "--issuer", help="issuer identifier and accepted SVID audience (default: http://LISTEN)"
    )
    parser.add_argument(
        "--audience",
        dest="audiences",
        action="append",
        help="an audience this issuer serves (repeatable; default: alpha and beta)",
    )
    parser.add_argument("--token-lifetime", type=int, default=300)
    parser.add_argument(
        "--parent-pid", type=int, help="exit when this process (the one that started us) is gone"
    )
    parser.add_argument("--leeway", type=float, default=0.0, help="clock skew allowed, seconds")
    parser.add_argument(
        "--jwks-min-refresh",
        type=float,
        default=5.0,
        help="minimum seconds between two fetches of the agent's keys",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging()
    sock = bind(*parse_listen(args.listen))
    issuer = args.issuer or base_url(sock)
    config = IssuerConfig(
        issuer=issuer,
        audiences=tuple(args.audiences or ("alpha", "beta")),
        policy=AssertionPolicy(
            audience=issuer,
            trust_domain=args.trust_domain,
            path_prefix=args.path_prefix,
            leeway=args.leeway,
        ),
        lifetime=args.token_lifetime,
    )
    http: httpx.AsyncClient = key_set_http_client(ca_file=args.oidc_ca_file)
    svid_keys = KeySetSource(
        http,
        discovery_url=args.oidc_discovery,
        policy=RefreshPolicy(min_interval=args.jwks_min_refresh),
    )
    log.info(
        "%s: issuer id %s, audiences %s, clients spiffe://%s%s*",
        NAME,
        issuer,
        ",".join(config.audiences),
        args.trust_domain,
        config.policy.path_prefix,
    )
    serve(TokenIssuer(config, svid_keys, AccessTokenSigner()).app(), sock, NAME, args.parent_pid)


if __name__ == "__main__":
    main()
