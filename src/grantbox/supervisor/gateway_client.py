"""The supervisor's side of the supervisor API, as a small async httpx client.

The supervisor always dials the gateway (never the reverse). The client keeps the
per-sandbox token in memory, renews it before it expires (and rewrites the token file when
it was given one), and never puts the token in a ``repr`` or an exception message.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson

from grantbox.profiles import EffectiveConfig, StaticSecrets

from .token_file import read_token, replace_token

RENEW_WHEN_LEFT = 1 / 3
SANDBOX_GONE = "sandbox_gone"  # the gateway's error code for a deleted sandbox


class SupervisorClientError(RuntimeError):
    """The gateway refused or could not be reached; ``status`` is the HTTP status or 0."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def sandbox_gone(self) -> bool:
        """The gateway no longer knows this sandbox (deleted) or refuses our token (revoked
        or expired): the supervisor must stop injecting and tear the sandbox down."""
        return self.status == 401 or (self.status == 404 and self.code == SANDBOX_GONE)


@dataclass(frozen=True, slots=True)
class ExecRequestItem:
    exec_id: str
    command: tuple[str, ...]
    timeout_seconds: float
    stdin: bool = False  # the operator sends input (fetch it with ``exec_input``)
    tty: bool = False  # run the command on a terminal of this size
    rows: int = 0
    cols: int = 0


def token_window(token: str) -> tuple[int, int]:
    """``(iat, exp)`` read without verification (the gateway verifies; we only plan)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return 0, 0
    issued, expires = claims.get("iat"), claims.get("exp")
    if not isinstance(issued, int | float) or not isinstance(expires, int | float):
        return 0, 0
    return int(issued), int(expires)


class SupervisorClient:
    def __init__(
        self,
        gateway_url: str,
        sandbox_id: str,
        token: str,
        *,
        token_file: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.sandbox_id = sandbox_id
        self._token = token
        self._token_file = token_file
        self._issued_at, self._expires_at = token_window(token)
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=gateway_url.rstrip("/"),
            transport=transport,
            timeout=httpx.Timeout(timeout),
            trust_env=False,
            follow_redirects=False,
        )
        self._base = f"/api/v1/supervisor/sandboxes/{sandbox_id}"

    @classmethod
    def from_token_file(
        cls, gateway_url: str, sandbox_id: str, token_file: Path, **kwargs: Any
    ) -> SupervisorClient:
        token = read_token(token_file)
        return cls(gateway_url, sandbox_id, token, token_file=token_file, **kwargs)

    def __repr__(self) -> str:
        return f"SupervisorClient(sandbox_id={self.sandbox_id!r}, token=<hidden>)"

    async def __aenter__(self) -> SupervisorClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def token_expires_at(self) -> int:
        return self._expires_at

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        seconds: float | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token}"}
        content = None
        if json_body is not None:  # (orjson: event batches are most of what is sent)
            content = orjson.dumps(json_body)
            headers["Content-Type"] = "application/json"
        try:
            response = await self._http.request(
                method,
                self._base + path,
                content=content,
                params=params,
                headers=headers,
                timeout=seconds if seconds is not None else self._timeout,
            )
        except httpx.HTTPError as exc:
            raise SupervisorClientError(f"gateway unreachable: {type(exc).__name__}") from None
        if response.status_code >= 400:
            code, message = "", response.text[:300]
            try:
                body = response.json()
                code, message = str(body.get("error", "")), str(body.get("message", message))
            except ValueError:
                pass
            raise SupervisorClientError(
                f"gateway answered {response.status_code}: {message}", response.status_code, code
            )
        return response

    async def config(self, wait: str | None = None, wait_seconds: float = 30.0) -> EffectiveConfig:
        """The effective config; with ``wait``, returns once the revision differs (or timeout).

        Carries the values of the stored credentials it binds (in ``secrets``, which no
        ``repr`` shows); the supervisor adds their placeholders.
        """
        params: dict[str, Any] = {}
        if wait:
            params = {"wait": wait, "timeout": wait_seconds}
        response = await self._request(
            "GET",
            "/config",
            params=params,
            seconds=(wait_seconds + self._timeout) if wait else None,
        )
        data = response.json()
        values = data.get("credential_values") or {}
        secrets = StaticSecrets({str(k): str(v) for k, v in values.items()})
        return EffectiveConfig.from_dict(data).with_secrets(secrets)

    async def heartbeat(
        self,
        applied_revision: str = "",
        error: str = "",
        conditions: Sequence[Mapping[str, str]] = (),
        metrics: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """``conditions`` are ``{type, status, reason, message}`` (the gateway adds ``since``);
        ``metrics`` a snapshot of the supervisor's registry (left out when None, as older
        gateways refuse the field)."""
        body: dict[str, Any] = {
            "applied_revision": applied_revision,
            "error": error,
            "conditions": [dict(condition) for condition in conditions],
        }
        if metrics is not None:
            body["metrics"] = list(metrics)
        data: dict[str, Any] = (await self._request("POST", "/heartbeat", json_body=body)).json()
        return data

    async def ship_logs(self, lines: Iterable[Mapping[str, Any] | bytes]) -> int:
        """Lines are ``{"message": str, "stream": str, "ts": float}`` (or such an object
        already encoded); sent in batches."""
        batch = [_as_json(line) for line in lines]
        sent = 0
        for start in range(0, len(batch), 1000):
            chunk = batch[start : start + 1000]
            await self._request("POST", "/logs", json_body={"lines": chunk})
            sent += len(chunk)
        return sent

    async def ship_events(self, events: Iterable[Mapping[str, Any] | bytes]) -> int:
        """Events are mappings, or bytes already encoded as one JSON object each (sent as
        they are); sent in batches."""
        # (Only a mapping that is not a dict is copied: orjson encodes dicts.)
        batch = [_as_json(event) for event in events]
        sent = 0
        for start in range(0, len(batch), 1000):
            chunk = batch[start : start + 1000]
            await self._request("POST", "/events", json_body={"events": chunk})
            sent += len(chunk)
        return sent

    async def next_exec(self, wait_seconds: float = 25.0) -> ExecRequestItem | None:
        response = await self._request(
            "GET",
            "/exec/next",
            params={"timeout": wait_seconds},
            seconds=wait_seconds + self._timeout,
        )
        if response.status_code == 204:
            return None
        data = response.json()
        return ExecRequestItem(
            str(data["exec_id"]),
            tuple(str(a) for a in data["command"]),
            float(data.get("timeout_seconds", 300)),
            stdin=bool(data.get("stdin", False)),
            tty=bool(data.get("tty", False)),
            rows=int(data.get("rows", 0)),
            cols=int(data.get("cols", 0)),
        )

    async def exec_output(self, exec_id: str, stream: str, data: bytes) -> None:
        """One chunk; raises with status 429 when the operator is behind (send it again)
        and 404 once the operator is gone."""
        body = {"stream": stream, "data": base64.b64encode(data).decode()}
        await self._request("POST", f"/exec/{exec_id}/output", json_body=body)

    async def exec_input(self, exec_id: str, wait_seconds: float = 25.0) -> list[dict[str, Any]]:
        """The operator's next input items (``data`` base64, ``eof``, ``resize``); empty
        when none came in time. Raises with status 404 once the exec is over."""
        response = await self._request(
            "GET",
            f"/exec/{exec_id}/input",
            params={"timeout": wait_seconds},
            seconds=wait_seconds + self._timeout,
        )
        items = response.json().get("items", [])
        return [item for item in items if isinstance(item, dict)]

    async def report_exit(self, exit_code: int, reason: str = "") -> None:
        """The sandbox's own command ended (``sandbox get`` shows it with the reason)."""
        body = {"exit_code": max(-255, min(255, exit_code)), "reason": reason[:4000]}
        await self._request("POST", "/exit", json_body=body)

    async def exec_exit(self, exec_id: str, exit_code: int) -> None:
        await self._request("POST", f"/exec/{exec_id}/exit", json_body={"exit_code": exit_code})

    async def renew_token(self) -> int:
        """Swap the token for a fresh one; returns its expiry (epoch seconds)."""
        data = (await self._request("POST", "/token")).json()
        self._token = str(data["token"])
        self._issued_at, self._expires_at = token_window(self._token)
        if self._token_file is not None:
            replace_token(self._token_file, self._token)
        return self._expires_at

    def token_expired(self, now: float | None = None) -> bool:
        """True once the token can no longer authenticate (or its expiry is unreadable)."""
        current = time.time() if now is None else now
        return self._expires_at <= 0 or current >= self._expires_at

    def renewal_due(self, now: float | None = None) -> bool:
        """True once less than a third of the token's lifetime is left (or it is unreadable)."""
        current = time.time() if now is None else now
        lifetime = self._expires_at - self._issued_at
        if lifetime <= 0:
            return True
        return self._expires_at - current < lifetime * RENEW_WHEN_LEFT


def _as_json(item: Mapping[str, Any] | bytes) -> Any:
    """What orjson encodes: bytes already encoded go in as they are."""
    if isinstance(item, bytes):
        return orjson.Fragment(item)
    return item if type(item) is dict else dict(item)
