"""Signing keys the demo tests make themselves, and a real loopback key publisher.

``KeyPublisher`` serves an OIDC discovery document and a JWKS over HTTP (uvicorn in a
background thread), like the identity agent does, but with keys the test controls, so a
test can sign JWT-SVIDs with claims the agent would never produce (foreign trust domain,
expired, wrong algorithm) and see the token issuer refuse them over the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}


@dataclass(frozen=True)
class DemoKey:
    kid: str
    alg: str
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = field(repr=False)

    def public_jwk(self, **extra: Any) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, **extra}

    def sign(self, claims: dict[str, Any], *, alg: str | None = None, **headers: Any) -> str:
        return jwt.encode(
            claims,
            self.private_key,
            algorithm=alg or self.alg,
            headers={"kid": self.kid, "typ": "JWT", **headers},
        )


_RSA_CACHE: list[rsa.RSAPrivateKey] = []


def make_key(alg: str = "ES256", kid: str | None = None) -> DemoKey:
    if alg in _CURVES:
        private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = ec.generate_private_key(
            _CURVES[alg]
        )
    else:
        if not _RSA_CACHE:
            _RSA_CACHE.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        private = _RSA_CACHE[0]
    return DemoKey(kid=kid or secrets.token_urlsafe(8), alg=alg, private_key=private)


def jwks(*keys: DemoKey, use: str | None = "sig") -> dict[str, Any]:
    extra = {"use": use} if use is not None else {}
    return {"keys": [key.public_jwk(**extra) for key in keys]}


def svid_claims(
    sub: str, aud: str | list[str], *, ttl: float = 300, **extra: Any
) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": sub,
        "aud": aud if isinstance(aud, list) else [aud],
        "exp": now + int(ttl),
        "iat": now,
        **extra,
    }


def with_header(token: str, **changes: Any) -> str:
    """The token with its JOSE header edited (``None`` removes a field); signature kept."""
    header_b64, payload, signature = token.split(".")
    padded = header_b64 + "=" * (-len(header_b64) % 4)
    header = json.loads(base64.urlsafe_b64decode(padded))
    for name, value in changes.items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return ".".join([encoded, payload, signature])


def unsigned(claims: dict[str, Any], kid: str) -> str:
    """An ``alg: none`` token."""
    return jwt.encode(claims, None, algorithm="none", headers={"kid": kid})


def hmac_signed(claims: dict[str, Any], kid: str, secret: bytes = b"k" * 32) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})


class KeyPublisher:
    """An OIDC discovery endpoint and JWKS on loopback, with request counters."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.discovery_requests = 0
        self.jwks_requests = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._app, log_level="warning", access_log=False, lifespan="off", interface="asgi3"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/keys"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/.well-known/openid-configuration":
            self.discovery_requests += 1
            body = {"issuer": self.url, "jwks_uri": self.jwks_url}
            status = 200
        elif path == "/keys":
            self.jwks_requests += 1
            body, status = self.document, 200
        else:
            body, status = {"error": "not_found"}, 404
        raw = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": raw})

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("key publisher did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


@contextmanager
def running_key_publisher(document: dict[str, Any]) -> Iterator[KeyPublisher]:
    publisher = KeyPublisher(document)
    publisher.start()
    try:
        yield publisher
    finally:
        publisher.stop()
