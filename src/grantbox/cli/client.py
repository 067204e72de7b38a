"""The HTTP client the CLI uses to talk to the gateway, and how it finds the gateway.

Where: ``--gateway``/``GRANTBOX_GATEWAY``, else the URL that ``gateway serve`` or
``grantbox up`` wrote to the user config directory. Who: ``GRANTBOX_TOKEN``, else the
operator token file next to it. The token is only ever sent in the Authorization header.
"""

from __future__ import annotations

import functools
import json
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from grantbox.gateway.settings import GATEWAY_FILE, OPERATOR_TOKEN_FILE, default_config_dir

from .output import fail

F = TypeVar("F", bound=Callable[..., Any])


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
        envvar="GRANTBOX_GATEWAY",
        metavar="URL",
        help="Gateway URL (default: $GRANTBOX_GATEWAY, else the one `grantbox up` recorded).",
    )(func)


def _recorded(config_dir: Path) -> dict[str, Any]:
    path = config_dir / GATEWAY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve_target(gateway: str | None) -> tuple[str, str]:
    """``(url, token)`` from flags, environment and the user config directory."""
    config_dir = default_config_dir()
    recorded = _recorded(config_dir)
    url = gateway or os.environ.get("GRANTBOX_GATEWAY") or recorded.get("url") or ""
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
    return GatewayCallError(f"{message} (HTTP {response.status_code})", response.status_code, code)


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

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        try:
            response = self._http.request(method, "/api/v1" + path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise GatewayCallError(
                f"cannot reach the gateway at {self.url}: {type(exc).__name__}"
            ) from None
        if response.status_code >= 400:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def stream(self, path: str, body: Any, read_timeout: float) -> Iterator[dict[str, Any]]:
        """NDJSON items of a streaming POST, as they arrive."""
        timeout = httpx.Timeout(30.0, read=read_timeout)
        try:
            with self._http.stream("POST", "/api/v1" + path, json=body, timeout=timeout) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error_from(resp)
                for line in resp.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise GatewayCallError(
                f"lost the gateway at {self.url}: {type(exc).__name__}"
            ) from None


def connect(gateway: str | None) -> GatewayClient:
    url, token = resolve_target(gateway)
    return GatewayClient(url, token)


def reports_gateway_errors(func: F) -> F:
    """Turn a failed gateway call into one ``error:`` line and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GatewayCallError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]
