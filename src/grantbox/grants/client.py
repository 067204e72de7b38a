"""The one HTTP exchange with a token endpoint, hardened against a hostile or broken peer.

Proxy variables are ignored, redirects are never followed, the whole exchange (connect,
send, every byte of the answer) fits in ``total_timeout`` even when the peer trickles, and
no more than 64 KiB of answer is ever read. What the answer means is decided in
:mod:`grantbox.grants.answer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from grantbox.profiles import token_endpoint_problem

from .answer import (
    MAX_BODY_BYTES,
    TokenAnswer,
    judge_answer,
    parse_retry_after,
    sanitise_oauth_field,
)
from .errors import (
    GrantError,
    GrantMisconfigured,
    TokenEndpointError,
    TokenEndpointRejected,
    TokenEndpointTimeout,
    TokenEndpointUnreachable,
)
from .request import FORM_CONTENT_TYPE, encode_form
from .tls import ClientCertificate, ContextCache

USER_AGENT = "grantbox-token-grant"


# TLS alerts with which a server turns down the certificate a client presented (or its
# absence). Our own verification failures (CERTIFICATE_VERIFY_FAILED) are not alerts.
_CERTIFICATE_ALERTS = (
    "ALERT_BAD_CERTIFICATE",
    "ALERT_CERTIFICATE_REQUIRED",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_CERTIFICATE_REVOKED",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_UNKNOWN_CA",
    "ALERT_ACCESS_DENIED",
    "ALERT_HANDSHAKE_FAILURE",
)


def certificate_refusal(exc: BaseException) -> str | None:
    """The TLS alert (e.g. ``TLSV1_ALERT_UNKNOWN_CA``) among an exception's causes that
    says the server refused our client certificate, or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            reason = str(getattr(current, "reason", "") or "")
            if any(alert in reason for alert in _CERTIFICATE_ALERTS):
                return reason
        current = current.__cause__ or current.__context__
    return None


def display_url(url: str) -> str:
    """The endpoint as operators see it in details: no query, no fragment, no userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class TokenEndpointClient:
    """POSTs token requests.

    Plain requests share one connection pool. A request with its own trust
    (``token_endpoint_ca``) or a client certificate (mutual TLS) gets a connection of its
    own: token requests are rare, and a pool keyed by certificates would outlive rotations.
    ``extra_ca_pem`` is trusted besides the system roots (the supervisor's
    ``--upstream-ca``), except for endpoints with a CA of their own.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        total_timeout: float = 15.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        extra_ca_pem: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if connect_timeout <= 0 or total_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.connect_timeout = connect_timeout
        self.total_timeout = total_timeout
        self.max_body_bytes = max_body_bytes
        self._contexts = ContextCache(extra_ca_pem)
        self._clock = clock
        self._http = self._client(self._contexts.get())

    def _client(self, context: ssl.SSLContext) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            verify=context,
            timeout=httpx.Timeout(
                self.total_timeout, connect=min(self.connect_timeout, self.total_timeout)
            ),
            headers={
                "Accept": "application/json",
                "Accept-Encoding": "identity",
                "User-Agent": USER_AGENT,
            },
        )

    async def request_token(
        self,
        url: str,
        form: list[tuple[str, str]],
        *,
        pinned_ca_pem: str = "",
        certificate: ClientCertificate | None = None,
    ) -> TokenAnswer:
        """One token request. Raises a :class:`GrantError` for every way it can fail.

        ``pinned_ca_pem``: the only CA trusted for this endpoint; ``certificate``: the
        X.509-SVID to present (mutual-TLS client authentication).
        """
        problem = token_endpoint_problem(url)
        if problem is not None:
            raise GrantMisconfigured(problem)
        where = display_url(url)
        if (pinned_ca_pem or certificate is not None) and urlsplit(url).scheme != "https":
            raise GrantMisconfigured(f"{where}: a CA or client certificate needs https")
        try:
            async with asyncio.timeout(self.total_timeout):
                if not pinned_ca_pem and certificate is None:
                    status, headers, body = await self._post(self._http, url, form, where, False)
                else:
                    try:
                        context = self._contexts.get(pinned_ca_pem, certificate)
                    except (ssl.SSLError, ValueError) as exc:
                        raise GrantMisconfigured(
                            f"{where}: cannot use the TLS settings ({type(exc).__name__})"
                        ) from None
                    http = self._client(context)
                    try:
                        status, headers, body = await self._post(
                            http, url, form, where, certificate is not None
                        )
                    finally:
                        # Closing a connection the peer broke may raise again; the first
                        # failure is the one that explains what happened.
                        with contextlib.suppress(httpx.HTTPError, OSError):
                            await http.aclose()
        except TimeoutError:
            raise TokenEndpointTimeout(
                f"POST {where} did not complete within {self.total_timeout:g} s"
            ) from None
        retry_after = None
        if "retry-after" in headers:
            retry_after = parse_retry_after(
                headers["retry-after"], self._clock(), headers.get("date")
            )
        return judge_answer(status, body, retry_after)

    async def _post(
        self,
        http: httpx.AsyncClient,
        url: str,
        form: list[tuple[str, str]],
        where: str,
        presented_certificate: bool,
    ) -> tuple[int, httpx.Headers, bytes]:
        try:
            async with http.stream(
                "POST",
                url,
                content=encode_form(form),
                headers={"Content-Type": FORM_CONTENT_TYPE},
            ) as response:
                body = await self._read_body(response, where)
                return response.status_code, response.headers, body
        except GrantError:
            raise
        except httpx.TimeoutException as exc:
            raise TokenEndpointTimeout(f"POST {where}: {type(exc).__name__}") from None
        except (httpx.HTTPError, ssl.SSLError) as exc:
            # httpx lets an SSLError from a read through unwrapped (a TLS 1.3 alert that
            # arrives after the handshake, e.g. the server refusing our certificate).
            refusal = certificate_refusal(exc) if presented_certificate else None
            if refusal is not None:
                raise TokenEndpointRejected(
                    f"POST {where}: the endpoint refused the client certificate ({refusal})"
                ) from None
            if isinstance(exc, httpx.ConnectError):
                cause = sanitise_oauth_field(str(exc)) or type(exc).__name__
                raise TokenEndpointUnreachable(f"POST {where}: {cause}") from None
            if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
                raise GrantMisconfigured(f"POST {where}: {type(exc).__name__}") from None
            # Protocol errors may quote the peer's bytes: report the kind of failure only.
            hint = ""
            if presented_certificate and isinstance(exc, httpx.ReadError | httpx.WriteError):
                # TLS 1.3 servers refuse a client certificate after the handshake; the
                # alert is often lost to the connection closing.
                hint = " (the connection broke after the TLS handshake: the endpoint may "
                hint += "have refused the client certificate)"
            raise TokenEndpointError(f"POST {where}: {type(exc).__name__}{hint}") from None

    async def _read_body(self, response: httpx.Response, where: str) -> bytes:
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise TokenEndpointError(f"POST {where}: answer has a content-encoding")
        too_big = TokenEndpointError(
            f"POST {where}: answer larger than {self.max_body_bytes} bytes"
        )
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise too_big
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise too_big
        return bytes(body)

    async def aclose(self) -> None:
        await self._http.aclose()
