"""An independent OAuth token endpoint for token exchange and mutual-TLS tests.

Unlike :mod:`tests.support.token_endpoint` (uvicorn, JWT-SVID client assertions), this one
runs its own blocking TLS server in threads, because the checks it exists for need what
ASGI does not carry: the client certificate of the connection, and a server that sends
real TLS alerts when it refuses one (asyncio's TLS drops them). It implements:

* RFC 8693 token exchange: ``subject_token`` must be a JWT-SVID whose signature verifies
  with the identity agent's JWKS (OIDC discovery), whose ``aud`` is this endpoint and whose
  ``sub`` is in the trust domain; ``subject_token_type`` must be ``…:token-type:jwt``;
  ``requested_token_type`` must be one it can issue; every ``resource`` must be an absolute
  URI without a fragment (else ``invalid_target``).
* ``client_credentials``.
* Client authentication by ``client_auth``: ``none`` (no assertion may be sent),
  ``jwt_svid`` (a ``jwt-spiffe`` client assertion, checked like the subject token) or
  ``tls`` (RFC 8705 ``tls_client_auth``: the certificate chains to the X.509 bundle — the TLS
  layer checks that — and its one URI SAN, a SPIFFE ID of the trust domain, equals the
  ``client_id`` parameter).

What it answers next can be overridden with :meth:`OAuthPeer.answer_next`; everything it
saw is recorded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import httpx
import jwt
import trustme

TOKEN_PATH = "/v1/token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]
MAX_REQUEST = 64 * 1024


class Refused(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Seen:
    """One token request as the endpoint received it."""

    form: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    peer_uri: str | None
    """The URI SAN of the client certificate, when one was presented."""
    peer_serial: int | None
    at: float = 0.0
    """When it arrived (``time.monotonic()``, one clock for every process on the host)."""

    def fields(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, value in self.form:
            out.setdefault(name, []).append(value)
        return out


@dataclass
class Answer:
    """A scripted answer; in a dict body, ``{subject_token}`` in a string value is replaced
    with the subject token just received (a hostile endpoint quoting it back)."""

    status: int
    body: dict[str, Any] | bytes
    headers: list[tuple[str, str]] = field(default_factory=list)

    def for_request(self, seen: Seen) -> Answer:
        if isinstance(self.body, bytes):
            return self
        sent = dict(seen.form).get("subject_token", "")
        body = {
            k: v.replace("{subject_token}", sent) if isinstance(v, str) else v
            for k, v in self.body.items()
        }
        return Answer(self.status, body, self.headers)


class OAuthPeer:
    def __init__(
        self,
        *,
        oidc_url: str | None,
        trust_domain: str,
        client_auth: str = "none",
        server_context: ssl.SSLContext | None = None,
    ) -> None:
        if client_auth not in ("none", "jwt_svid", "tls"):
            raise ValueError(f"unknown client_auth {client_auth!r}")
        self.oidc_url = oidc_url
        self.trust_domain = trust_domain
        self.client_auth = client_auth
        self.expires_in: int | None = 300
        self.success_fields: dict[str, Any] = {}
        self.seen: list[Seen] = []
        self.issued: list[str] = []
        self.rejections: list[str] = []
        self.tls_failures: list[str] = []
        self._context = server_context
        self._queued: list[Answer] = []
        self._serial = itertools.count(1)
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        scheme = "https" if server_context is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._stopped = threading.Event()

    # -- what tests use -----------------------------------------------------------------
    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def request_count(self) -> int:
        return len(self.seen)

    def forms(self) -> list[dict[str, list[str]]]:
        return [seen.fields() for seen in self.seen]

    def answer_next(self, *answers: Answer) -> None:
        """Answer the next requests with these, without checking anything, then as usual."""
        with self._lock:
            self._queued.extend(answers)

    # -- server -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        stream: socket.socket | ssl.SSLSocket = conn
        try:
            if self._context is not None:
                try:
                    stream = self._context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    self.tls_failures.append(str(getattr(exc, "reason", None) or exc))
                    return
            self._exchange(stream)
        except (OSError, h11.ProtocolError):
            return
        finally:
            with contextlib.suppress(OSError):
                stream.close()

    def _exchange(self, stream: socket.socket | ssl.SSLSocket) -> None:
        http = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = stream.recv(65536)
                http.receive_data(data)
                if not data:
                    return
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST:
                    return
            elif isinstance(event, h11.EndOfMessage):
                break
        assert request is not None
        peer_uri, peer_serial = _peer(stream)
        answer = self._handle(request, bytes(body), peer_uri, peer_serial)
        payload = (
            answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        )
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("connection", "close"),
            *answer.headers,
        ]
        stream.sendall(http.send(h11.Response(status_code=answer.status, headers=headers)) or b"")
        stream.sendall(http.send(h11.Data(data=payload)) or b"")
        stream.sendall(http.send(h11.EndOfMessage()) or b"")

    def _handle(
        self, request: h11.Request, body: bytes, peer_uri: str | None, peer_serial: int | None
    ) -> Answer:
        if request.target.decode() != TOKEN_PATH or request.method != b"POST":
            return Answer(404, {"error": "not_found"})
        try:
            form = tuple(
                parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
            )
        except (UnicodeDecodeError, ValueError):
            form = ()
        headers = tuple((k.decode().lower(), v.decode()) for k, v in request.headers)
        seen = Seen(form, headers, peer_uri, peer_serial, time.monotonic())
        with self._lock:
            self.seen.append(seen)
            queued = self._queued.pop(0) if self._queued else None
        if queued is not None:
            return queued.for_request(seen)
        try:
            return self._grant(seen)
        except Refused as refused:
            self.rejections.append(refused.description)
            return Answer(
                refused.status, {"error": refused.error, "error_description": refused.description}
            )

    # -- OAuth --------------------------------------------------------------------------
    def _grant(self, seen: Seen) -> Answer:
        fields = seen.fields()
        for name, values in fields.items():
            if len(values) > 1 and name != "resource":
                raise Refused(400, "invalid_request", f"repeated parameter {name}")
        one = {name: values[0] for name, values in fields.items()}
        if dict(seen.headers).get("authorization"):
            raise Refused(400, "invalid_request", "no Authorization header expected")
        self._authenticate_client(one, seen)
        grant_type = one.get("grant_type")
        answer: dict[str, Any]
        if grant_type == TOKEN_EXCHANGE:
            answer = self._exchange_token(one, fields.get("resource", []))
        elif grant_type == "client_credentials":
            if "subject_token" in one or "requested_token_type" in one:
                raise Refused(
                    400, "invalid_request", "token exchange parameters on client_credentials"
                )
            answer = {}
        else:
            raise Refused(400, "unsupported_grant_type", f"grant_type {grant_type!r}")
        token = f"gbx{next(self._serial)}.{secrets.token_urlsafe(24)}"
        self.issued.append(token)
        result: dict[str, Any] = {"access_token": token, "token_type": "Bearer", **answer}
        if self.expires_in is not None:
            result["expires_in"] = self.expires_in
        result.update(self.success_fields)
        return Answer(200, {k: v for k, v in result.items() if v is not None})

    def _authenticate_client(self, one: dict[str, str], seen: Seen) -> None:
        if self.client_auth == "tls":
            if "client_assertion" in one:
                raise Refused(400, "invalid_request", "client assertion on a mutual-TLS client")
            client_id = one.get("client_id")
            if not client_id:
                raise Refused(400, "invalid_request", "client_id is required (RFC 8705 §2)")
            if seen.peer_uri is None:
                raise Refused(401, "invalid_client", "no client certificate")
            if seen.peer_uri != client_id:
                raise Refused(401, "invalid_client", "certificate URI SAN does not match client_id")
            if not seen.peer_uri.startswith(f"spiffe://{self.trust_domain}/"):
                raise Refused(401, "invalid_client", "certificate is not of the trust domain")
        elif self.client_auth == "jwt_svid":
            if one.get("client_assertion_type") != JWT_SPIFFE:
                raise Refused(401, "invalid_client", "unsupported client_assertion_type")
            self.verify_svid(one.get("client_assertion", ""), "invalid_client", 401)
        elif "client_assertion" in one or "client_assertion_type" in one:
            raise Refused(400, "invalid_request", "this endpoint takes no client assertion")

    def _exchange_token(self, one: dict[str, str], resources: list[str]) -> dict[str, Any]:
        if one.get("subject_token_type") != JWT_TYPE:
            raise Refused(400, "invalid_request", "subject_token_type must be ...:token-type:jwt")
        self.verify_svid(one.get("subject_token", ""), "invalid_request", 400)
        requested = one.get("requested_token_type", ACCESS_TOKEN_TYPE)
        if requested not in (ACCESS_TOKEN_TYPE, JWT_TYPE):
            raise Refused(400, "invalid_request", "cannot issue the requested_token_type")
        for resource in resources:
            parts = urlsplit(resource)
            if not parts.scheme or not parts.netloc or "#" in resource:
                raise Refused(400, "invalid_target", "resource must be an absolute URI")
        return {"issued_token_type": requested}

    def verify_svid(self, token: str, error: str, status: int) -> dict[str, Any]:
        """The draft's JWT-SVID checks; returns the claims."""
        if not token:
            raise Refused(status, error, "missing JWT-SVID")
        try:
            header = jwt.get_unverified_header(token)
            key = self._key(str(header.get("kid", "")))
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=ALGORITHMS,
                audience=self.token_url,
                options={"require": ["sub", "aud", "exp"]},
            )
        except jwt.PyJWTError as exc:
            raise Refused(status, error, f"JWT-SVID rejected: {exc}") from None
        if claims["aud"] not in (self.token_url, [self.token_url]):
            raise Refused(status, error, "aud must be this token endpoint only")
        if not str(claims["sub"]).startswith(f"spiffe://{self.trust_domain}/"):
            raise Refused(status, error, "sub is not in the trusted trust domain")
        return claims

    def _key(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys and self.oidc_url is not None:
            with httpx.Client(trust_env=False, timeout=5.0) as http:
                discovery = http.get(f"{self.oidc_url}/.well-known/openid-configuration").json()
                jwks = http.get(discovery["jwks_uri"]).json()
            self._keys = {k["kid"]: jwt.PyJWK.from_dict(k) for k in jwks["keys"] if "kid" in k}
        if kid not in self._keys:
            raise jwt.InvalidKeyError("unknown signing key")
        return self._keys[kid]


def _peer(stream: socket.socket | ssl.SSLSocket) -> tuple[str | None, int | None]:
    """The URI SAN (when exactly one) and serial of a verified client certificate."""
    if not isinstance(stream, ssl.SSLSocket):
        return None, None
    certificate: dict[str, Any] | None = stream.getpeercert()
    if not certificate:
        return None, None
    names: tuple[tuple[str, str], ...] = certificate.get("subjectAltName", ())
    uris = [value for kind, value in names if kind == "URI"]
    serial = certificate.get("serialNumber")
    return (uris[0] if len(uris) == 1 else None), (int(serial, 16) if serial else None)


def mutual_tls_context(
    server: trustme.LeafCert,
    client_bundle_pem: bytes | None,
    *,
    require: bool = True,
    tls12: bool = False,
) -> ssl.SSLContext:
    """A server context presenting ``server``; with ``client_bundle_pem`` it asks for client
    certificates and verifies them against that bundle (required or optional)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.configure_cert(context)
    if client_bundle_pem is not None:
        context.load_verify_locations(cadata=client_bundle_pem.decode())
        context.verify_mode = ssl.CERT_REQUIRED if require else ssl.CERT_OPTIONAL
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


@contextlib.contextmanager
def running_peer(**options: Any) -> Iterator[OAuthPeer]:
    peer = OAuthPeer(**options)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


__all__ = [
    "ACCESS_TOKEN_TYPE",
    "JWT_TYPE",
    "TOKEN_EXCHANGE",
    "TOKEN_PATH",
    "Answer",
    "OAuthPeer",
    "Seen",
    "mutual_tls_context",
    "running_peer",
]
