"""A real OAuth token endpoint on loopback, for tests of anything that obtains tokens.

It speaks HTTP through uvicorn on 127.0.0.1 (optionally TLS with a trustme CA) and
authenticates clients the way the IETF SPIFFE client-authentication draft describes for
JWT-SVIDs: ``client_assertion_type`` is the configured one, the assertion's signature
verifies against the identity agent's JWKS found through OIDC discovery, ``aud`` is the
issuer identifier and nothing else, ``exp`` is in the future, and ``sub`` is a SPIFFE ID of
the trust domain. ``client_id`` and an ``Authorization`` header are refused.

What it does with the next requests is set with :meth:`TokenEndpoint.behave`; everything
it saw is recorded (request counters, form fields, headers, issued tokens).

    async with running_token_endpoint(oidc_url=agent.oidc_url,
                                      trust_domain="example.org") as issuer:
        binding = make_binding(token_endpoint=issuer.token_url, svid_audience=issuer.issuer)
        issuer.behave(Behaviour.grant(expires_in=60))
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt
import uvicorn

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SVID_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]
REALM_PATH = "/realms/grantbox"
TOKEN_PATH = f"{REALM_PATH}/protocol/openid-connect/token"
OMIT: Any = object()

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Behaviour:
    """How the endpoint answers token requests until told otherwise."""

    kind: str = "grant"
    status: int = 200
    body: bytes = b""
    expires_in: Any = 300
    access_token: str | None = None
    delay: float = 0.0
    location: str = ""
    size: int = 0
    declare_length: bool = True
    extra_headers: tuple[tuple[str, str], ...] = ()
    echo: str = ""

    @classmethod
    def grant(
        cls, *, expires_in: Any = 300, access_token: str | None = None, delay: float = 0.0
    ) -> Behaviour:
        """Verify the client and issue a token (``expires_in=OMIT`` leaves the field out;
        ``access_token`` replaces the random token, e.g. with a malformed one)."""
        return cls(expires_in=expires_in, access_token=access_token, delay=delay)

    @classmethod
    def answer(cls, status: int, body: bytes | dict[str, Any], *, delay: float = 0.0) -> Behaviour:
        """A fixed answer without verifying anything (5xx, odd JSON, plain text…)."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        return cls(kind="answer", status=status, body=raw, delay=delay)

    @classmethod
    def server_error(cls, status: int = 503) -> Behaviour:
        return cls.answer(status, b"upstream exploded\r\nstack trace: secret-ish internals")

    @classmethod
    def invalid_client(cls, description: str = "client authentication failed") -> Behaviour:
        return cls.answer(401, {"error": "invalid_client", "error_description": description})

    @classmethod
    def echo_assertion(cls, template: str, *, status: int = 401) -> Behaviour:
        """A hostile issuer quoting the client assertion it just received back in its
        OAuth error: ``template`` may use ``{assertion}`` and ``{signature}``."""
        return cls(kind="echo", status=status, echo=template)

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Behaviour:
        return cls(kind="redirect", status=status, location=location)

    @classmethod
    def hang(cls) -> Behaviour:
        """Accept the request and never answer."""
        return cls(kind="hang")

    @classmethod
    def trickle(cls, interval: float = 0.1) -> Behaviour:
        """Send a 200 status line, then one body byte every ``interval`` forever."""
        return cls(kind="trickle", delay=interval)

    @classmethod
    def huge(cls, size: int = 5 * 1024 * 1024, *, declare_length: bool = True) -> Behaviour:
        """A 200 answer of ``size`` bytes, with or without a Content-Length header."""
        return cls(kind="huge", size=size, declare_length=declare_length)

    def with_headers(self, *headers: tuple[str, str]) -> Behaviour:
        return replace(self, extra_headers=self.extra_headers + headers)


@dataclass(frozen=True)
class SeenRequest:
    """One HTTP request as the endpoint received it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    form: tuple[tuple[str, str], ...]

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


class ClientRejected(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class _JwksCache:
    """The agent's JWKS, found through OIDC discovery, refetched when a ``kid`` is unknown."""

    def __init__(self, oidc_url: str) -> None:
        self._oidc_url = oidc_url.rstrip("/")
        self._keys: dict[str, jwt.PyJWK] = {}

    async def key(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys:
            await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise ClientRejected("invalid_client", "unknown signing key") from None

    async def _refresh(self) -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
            discovery = (
                await http.get(f"{self._oidc_url}/.well-known/openid-configuration")
            ).json()
            jwks = (await http.get(discovery["jwks_uri"])).json()
        self._keys = {k["kid"]: jwt.PyJWK.from_dict(k) for k in jwks.get("keys", []) if "kid" in k}


class TokenEndpoint:
    """An ASGI token endpoint with a recorder; run it with :func:`running_token_endpoint`."""

    def __init__(
        self,
        *,
        oidc_url: str | None,
        trust_domain: str,
        assertion_type: str = JWT_SPIFFE,
    ) -> None:
        self.trust_domain = trust_domain.removeprefix("spiffe://")
        self.assertion_type = assertion_type
        self.behaviour = Behaviour.grant()
        self.seen: list[SeenRequest] = []
        self.issued: list[str] = []
        # Each issued token's requested audience: requests answered together may be
        # answered in another order than they arrived.
        self.audience_of: dict[str, str] = {}
        self.subjects: list[str] = []
        self.rejections: list[str] = []
        self.base_url = ""
        self._jwks = _JwksCache(oidc_url) if oidc_url else None
        self._release = asyncio.Event()
        self._refusals_left = 0
        self._refusal = ""
        self._serial = itertools.count(1)
        self._token_requests_changed = asyncio.Condition()

    # -- what tests read ---------------------------------------------------------------
    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def issuer(self) -> str:
        """The issuer identifier: the only audience an SVID may carry (Keycloak realm URL)."""
        return self.base_url + REALM_PATH

    @property
    def token_requests(self) -> list[SeenRequest]:
        return [r for r in self.seen if r.path == TOKEN_PATH and r.method == "POST"]

    @property
    def request_count(self) -> int:
        """Token requests received (POSTs to the token path)."""
        return len(self.token_requests)

    @property
    def http_requests(self) -> int:
        """Every HTTP request received, any path."""
        return len(self.seen)

    def forms(self) -> list[dict[str, list[str]]]:
        out: list[dict[str, list[str]]] = []
        for request in self.token_requests:
            fields: dict[str, list[str]] = {}
            for name, value in request.form:
                fields.setdefault(name, []).append(value)
            out.append(fields)
        return out

    def behave(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    def refuse_next(
        self, count: int, description: str = "Token was issued too far in the past to be used now"
    ) -> None:
        """Answer the next ``count`` token requests ``401 invalid_client`` (as Keycloak does
        for an assertion older than it accepts), then behave as set again."""
        self._refusals_left = count
        self._refusal = description

    async def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._token_requests_changed:
            await self._token_requests_changed.wait_for(lambda: self.request_count >= count)

    def release(self) -> None:
        """Let hanging and trickling answers end (done on stop)."""
        self._release.set()

    # -- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = tuple(
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
        )
        try:
            form = tuple(parse_qsl(body.decode("ascii"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            form = ()
        request = SeenRequest(scope["method"], scope["path"], headers, form)
        self.seen.append(request)
        if request.path != TOKEN_PATH or request.method != "POST":
            await _send(send, 404, json.dumps({"error": "not_found"}).encode())
            return
        async with self._token_requests_changed:
            self._token_requests_changed.notify_all()
        await self._answer(request, send)

    async def _answer(self, request: SeenRequest, send: Send) -> None:
        if self._refusals_left > 0:
            self._refusals_left -= 1
            self.rejections.append(self._refusal)
            body = {"error": "invalid_client", "error_description": self._refusal}
            await _send(send, 401, json.dumps(body).encode())
            return
        b = self.behaviour
        if b.delay and b.kind != "trickle":
            await self._sleep(b.delay)
        extra = list(b.extra_headers)
        if b.kind == "answer":
            await _send(send, b.status, b.body, extra)
        elif b.kind == "echo":
            assertion = dict(request.form).get("client_assertion", "")
            quoted = b.echo.format(assertion=assertion, signature=assertion.rsplit(".", 1)[-1])
            body = {"error": "invalid_client", "error_description": quoted}
            await _send(send, b.status, json.dumps(body).encode(), extra)
        elif b.kind == "redirect":
            await _send(send, b.status, b"", [("location", b.location), *extra])
        elif b.kind == "hang":
            await self._release.wait()
        elif b.kind == "trickle":
            await send(_start(200, [("content-type", "application/json"), *extra]))
            while not self._release.is_set():
                await send({"type": "http.response.body", "body": b" ", "more_body": True})
                await self._sleep(b.delay)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif b.kind == "huge":
            await self._send_huge(send, b, extra)
        else:
            await self._grant(request, b, send, extra)

    async def _grant(
        self, request: SeenRequest, b: Behaviour, send: Send, extra: list[tuple[str, str]]
    ) -> None:
        try:
            subject = await self._authenticate(request)
        except ClientRejected as rejected:
            self.rejections.append(rejected.description)
            status = 401 if rejected.error == "invalid_client" else 400
            payload = {"error": rejected.error, "error_description": rejected.description}
            await _send(send, status, json.dumps(payload).encode(), extra)
            return
        self.subjects.append(subject)
        token = b.access_token
        if token is None:
            token = f"gbx{next(self._serial)}.{secrets.token_urlsafe(24)}"
        self.issued.append(token)
        self.audience_of[token] = dict(request.form).get("audience", "")
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if b.expires_in is not OMIT:
            answer["expires_in"] = b.expires_in
        fields = dict(request.form)
        if "scope" in fields:
            answer["scope"] = fields["scope"]
        await _send(send, 200, json.dumps(answer).encode(), extra)

    async def _authenticate(self, request: SeenRequest) -> str:
        """The draft's JWT-SVID client authentication; returns the client's SPIFFE ID."""
        names = [name for name, _ in request.form]
        fields = dict(request.form)
        if len(names) != len(set(names)):
            raise ClientRejected("invalid_request", "repeated form field")
        if fields.get("grant_type") != "client_credentials":
            raise ClientRejected("unsupported_grant_type", "grant_type must be client_credentials")
        if "client_id" in fields or "client_secret" in fields or request.header("authorization"):
            raise ClientRejected("invalid_request", "client must authenticate by assertion only")
        if fields.get("client_assertion_type") != self.assertion_type:
            raise ClientRejected("invalid_client", "unsupported client_assertion_type")
        assertion = fields.get("client_assertion", "")
        if not assertion:
            raise ClientRejected("invalid_client", "missing client_assertion")
        if self._jwks is None:
            raise ClientRejected("invalid_client", "no trust bundle configured")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise ClientRejected("invalid_client", "client_assertion is not a JWT") from None
        key = await self._jwks.key(str(header.get("kid", "")))
        try:
            claims = jwt.decode(
                assertion,
                key=key,
                algorithms=SVID_ALGORITHMS,
                audience=self.issuer,
                options={"require": ["sub", "aud", "exp"]},
            )
        except jwt.PyJWTError as exc:
            raise ClientRejected("invalid_client", f"JWT-SVID rejected: {exc}") from None
        audience = claims["aud"]
        if audience != self.issuer and audience != [self.issuer]:
            raise ClientRejected("invalid_client", "aud must be the issuer identifier only")
        subject = str(claims["sub"])
        if not subject.startswith(f"spiffe://{self.trust_domain}/"):
            raise ClientRejected("invalid_client", "sub is not in the trusted trust domain")
        return subject

    async def _send_huge(self, send: Send, b: Behaviour, extra: list[tuple[str, str]]) -> None:
        headers = [("content-type", "application/json"), *extra]
        if b.declare_length:
            headers.append(("content-length", str(b.size)))
        await send(_start(200, headers))
        chunk = b"x" * 65536
        left = b.size
        while left > 0 and not self._release.is_set():
            piece = chunk[: min(left, len(chunk))]
            left -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": left > 0})

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._release.wait()


def _start(status: int, headers: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
    }


async def _send(
    send: Send, status: int, body: bytes, extra: list[tuple[str, str]] | None = None
) -> None:
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    await send(_start(status, headers + (extra or [])))
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _InLoopServer(uvicorn.Server):
    """uvicorn inside the test's event loop; leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve an ASGI app on a free loopback port; yields its base URL."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets that say so.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        ssl_context_factory=None if ssl_context is None else (lambda _cfg, _dflt: ssl_context),
    )
    server = _InLoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError("test server did not start")
        await asyncio.sleep(0.01)
    scheme = "https" if ssl_context is not None else "http"
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        yield f"{scheme}://{netloc}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@contextlib.asynccontextmanager
async def running_token_endpoint(
    *,
    oidc_url: str | None,
    trust_domain: str,
    assertion_type: str = JWT_SPIFFE,
    host: str = "127.0.0.1",
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[TokenEndpoint]:
    """A :class:`TokenEndpoint` listening on loopback for the duration of the block."""
    endpoint = TokenEndpoint(
        oidc_url=oidc_url, trust_domain=trust_domain, assertion_type=assertion_type
    )
    async with serve_asgi(endpoint, host=host, ssl_context=ssl_context) as base_url:
        endpoint.base_url = base_url
        try:
            yield endpoint
        finally:
            endpoint.release()


__all__ = [
    "JWT_BEARER",
    "JWT_SPIFFE",
    "OMIT",
    "TOKEN_PATH",
    "Behaviour",
    "SeenRequest",
    "TokenEndpoint",
    "running_token_endpoint",
    "serve_asgi",
]
