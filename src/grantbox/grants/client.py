"""The one HTTP exchange with a token endpoint, hardened against a hostile or broken peer.

Proxy variables are ignored, redirects are never followed, the whole exchange (connect,
send, every byte of the answer) fits in ``total_timeout`` even when the peer trickles, and
no more than 64 KiB of answer is ever read. What the answer means is decided in
:mod:`grantbox.grants.answer`.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import httpx

from grantbox.profiles import token_endpoint_problem

from .answer import MAX_BODY_BYTES, TokenAnswer, judge_answer, sanitise_oauth_field
from .errors import (
    GrantError,
    GrantMisconfigured,
    TokenEndpointError,
    TokenEndpointTimeout,
    TokenEndpointUnreachable,
)
from .request import FORM_CONTENT_TYPE, encode_form

USER_AGENT = "grantbox-token-grant"


def display_url(url: str) -> str:
    """The endpoint as operators see it in details: no query, no fragment, no userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class TokenEndpointClient:
    """POSTs token requests; one connection pool shared by every binding."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        total_timeout: float = 15.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if connect_timeout <= 0 or total_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.connect_timeout = connect_timeout
        self.total_timeout = total_timeout
        self.max_body_bytes = max_body_bytes
        self._http = httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            verify=verify,
            transport=transport,
            timeout=httpx.Timeout(total_timeout, connect=min(connect_timeout, total_timeout)),
            headers={
                "Accept": "application/json",
                "Accept-Encoding": "identity",
                "User-Agent": USER_AGENT,
            },
        )

    async def request_token(self, url: str, form: list[tuple[str, str]]) -> TokenAnswer:
        """One token request. Raises a :class:`GrantError` for every way it can fail."""
        problem = token_endpoint_problem(url)
        if problem is not None:
            raise GrantMisconfigured(problem)
        where = display_url(url)
        try:
            async with asyncio.timeout(self.total_timeout):
                status, body = await self._post(url, form, where)
        except TimeoutError:
            raise TokenEndpointTimeout(
                f"POST {where} did not complete within {self.total_timeout:g} s"
            ) from None
        return judge_answer(status, body)

    async def _post(self, url: str, form: list[tuple[str, str]], where: str) -> tuple[int, bytes]:
        try:
            async with self._http.stream(
                "POST",
                url,
                content=encode_form(form),
                headers={"Content-Type": FORM_CONTENT_TYPE},
            ) as response:
                return response.status_code, await self._read_body(response, where)
        except GrantError:
            raise
        except httpx.TimeoutException as exc:
            raise TokenEndpointTimeout(f"POST {where}: {type(exc).__name__}") from None
        except httpx.ConnectError as exc:
            cause = sanitise_oauth_field(str(exc)) or type(exc).__name__
            raise TokenEndpointUnreachable(f"POST {where}: {cause}") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise GrantMisconfigured(f"POST {where}: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            # Protocol errors may quote the peer's bytes: report the kind of failure only.
            raise TokenEndpointError(f"POST {where}: {type(exc).__name__}") from None

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
