"""The HTTP client the CLI uses to talk to the gateway, and how it finds the gateway.

Where: ``--gateway``/``GRANTBOX_GATEWAY``, else the URL that ``gateway serve`` or
``grantbox up`` wrote to the user config directory. Who: ``GRANTBOX_TOKEN``, else the
operator token file next to it. The token is only ever sent in the Authorization header.

Failures become one human sentence (:func:`transport_problem`): what went wrong talking to
the gateway and what to try, never an exception class name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from grantbox.gateway.settings import GATEWAY_FILE, OPERATOR_TOKEN_FILE, default_config_dir

from .output import fail

F = TypeVar("F", bound=Callable[..., Any])

NOT_RUNNING_HINT = "is `grantbox up` running? (`grantbox status` checks)"


class GatewayCallError(Exception):
    """A one-line reason the gateway call failed (HTTP error or unreachable)."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying context per process (building one costs more than a request)."""
    return ssl.create_default_context()


def gateway_option(func: F) -> F:
    return click.option(
        "--gateway",
        "gateway",
        metavar="URL",
        help="Gateway URL (default: $GRANTBOX_GATEWAY, else the one `grantbox up` recorded).",
    )(func)


def recorded_gateway(config_dir: Path | None = None) -> dict[str, Any]:
    """What ``grantbox up``/``gateway serve`` wrote about itself (empty when nothing)."""
    path = (config_dir or default_config_dir()) / GATEWAY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_url(url: str, source: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise GatewayCallError(
            f"{source} {url!r} is not a gateway URL: write it as http://HOST:PORT (or https://…)"
        )
    return url


def resolve_target(gateway: str | None) -> tuple[str, str]:
    """``(url, token)`` from flags, environment and the user config directory."""
    config_dir = default_config_dir()
    recorded = recorded_gateway(config_dir)
    if gateway:
        url = check_url(gateway, "--gateway")
    elif os.environ.get("GRANTBOX_GATEWAY"):
        url = check_url(os.environ["GRANTBOX_GATEWAY"], "GRANTBOX_GATEWAY")
    else:
        url = str(recorded.get("url") or "")
    if not url:
        raise GatewayCallError(
            "no gateway configured: pass --gateway URL or set GRANTBOX_GATEWAY "
            "(or start one with `grantbox up` / `grantbox gateway serve`)"
        )
    token = os.environ.get("GRANTBOX_TOKEN", "").strip()
    if not token:
        token_file = Path(recorded.get("token_file") or config_dir / OPERATOR_TOKEN_FILE)
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError:
            raise GatewayCallError(
                f"no operator token: set GRANTBOX_TOKEN or make {token_file} readable"
            ) from None
    return url, token


def _errno_text(exc: Exception) -> str:
    """``[Errno 111] Connection refused`` → ``connection refused``."""
    text = str(exc) or "no detail"
    if text.startswith("[Errno") and "] " in text:
        text = text.split("] ", 1)[1]
    text = " ".join(text.split())
    return text[:1].lower() + text[1:]


def transport_problem(exc: Exception) -> str:
    """What went wrong on the wire, in words (pure)."""
    if isinstance(exc, httpx.TimeoutException):
        return "it did not answer in time"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return "the URL is not usable: write it as http://HOST:PORT (or https://…)"
    if isinstance(exc, httpx.ConnectError):
        detail = _errno_text(exc)
        if "certificate" in detail or "ssl" in detail.lower():
            return f"TLS failed ({detail}); check the URL's scheme and the gateway's certificate"
        if "name or service not known" in detail or "nodename" in detail:
            return "its host name does not resolve"
        return detail
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "the connection broke off"
    return _errno_text(exc)


def _error_from(response: httpx.Response) -> GatewayCallError:
    code, message = "", response.text.strip()[:300] or response.reason_phrase
    try:
        body = response.json()
        if isinstance(body, dict):
            code = str(body.get("error", ""))
            message = str(body.get("message") or body.get("detail") or message)
    except ValueError:
        pass
    message = " ".join(message.split())
    if response.status_code == 401:
        message = f"{message}; check GRANTBOX_TOKEN or the operator token file"
    return GatewayCallError(f"{message} (HTTP {response.status_code})", response.status_code, code)


@dataclass
class Stream:
    """An NDJSON answer being read: its headers, then its items as they arrive."""

    headers: Mapping[str, str]
    items: Iterator[dict[str, Any]]


class GatewayClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            trust_env=False,
            follow_redirects=False,
            transport=transport,
            verify=_tls_context(),
        )

    def __repr__(self) -> str:
        return f"GatewayClient(url={self.url!r}, token=<hidden>)"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _unreachable(self, exc: Exception, lost: bool = False) -> GatewayCallError:
        if lost:
            return GatewayCallError(f"lost the gateway at {self.url}: {transport_problem(exc)}")
        return GatewayCallError(
            f"cannot reach the gateway at {self.url}: {transport_problem(exc)}; " + NOT_RUNNING_HINT
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = self._http.request(
                method, "/api/v1" + path, json=body, params=params, **extra
            )
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        read_timeout: float | None = 30.0,
    ) -> Iterator[Stream]:
        """An NDJSON answer; blank keep-alive lines are skipped. ``read_timeout=None``
        waits for the next line forever (``--follow``)."""
        timeout = httpx.Timeout(30.0, read=read_timeout)
        started = False
        try:
            with self._http.stream(
                method, "/api/v1" + path, json=body, params=params, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                started = True
                yield Stream(response.headers, _items(response))
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, lost=started) from None


def _items(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.strip():
            item = json.loads(line)
            if isinstance(item, dict):
                yield item


def connect(gateway: str | None, *, timeout: float = 30.0) -> GatewayClient:
    url, token = resolve_target(gateway)
    return GatewayClient(url, token, timeout=timeout)


def reports_gateway_errors(func: F) -> F:
    """Turn a failed gateway call into one ``error:`` line and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GatewayCallError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]
