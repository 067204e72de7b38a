"""Supervisor routes: the explicit allowlist a per-sandbox token may call.

The ``Supervisor`` dependency refuses a token bound to another sandbox before the request
body is even parsed, and every handler compares the ids again before it reads or writes.
A sandbox that is deleted or being deleted is answered ``sandbox_gone`` (404) on every
sandbox-scoped route, so its supervisor stops injecting and tears the sandbox down; a
missing exec id stays a plain ``not_found``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import orjson
from anyio import to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from grantbox.gateway.errors import Busy, NotFound, SandboxGone
from grantbox.gateway.exec_relay import Delivery
from grantbox.gateway.shipped_events import BatchRefused, read_shipped
from grantbox.profiles import EffectiveConfig

from .auth_deps import Supervisor, own_sandbox
from .schemas import EventBatch, ExecExit, ExecOutput, Heartbeat, LogBatch, SandboxExit
from .state import Gateway, gateway_of

T = TypeVar("T")


class _OrjsonRequest(Request):
    """A request whose JSON body is parsed by orjson: supervisors ship an event for every
    request their proxy serves, and ``json.loads`` was a tenth of the gateway's cost of
    storing them. A body orjson refuses raises its ``JSONDecodeError`` (a subclass of
    ``json``'s), so a malformed body gets the same 422 as before."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class _OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route


router = APIRouter(prefix="/api/v1/supervisor", tags=["supervisor"], route_class=_OrjsonRoute)

RECHECK_SECONDS = 0.5


async def _for_live_sandbox(call: Callable[..., T], *args: Any) -> T:
    """Run a sandbox service call in a thread; a missing sandbox becomes ``sandbox_gone``."""
    try:
        return await to_thread.run_sync(call, *args)
    except NotFound as exc:
        raise SandboxGone(f"{exc.message}; stop the supervisor") from None


@router.get("/sandboxes/{sandbox_id}/config")
async def supervisor_config(
    request: Request,
    sandbox_id: str,
    claims: Supervisor,
    wait: str = Query(default="", max_length=200, description="return when revision != wait"),
    wait_seconds: float = Query(default=30.0, ge=0, le=3600, alias="timeout"),
) -> dict[str, Any]:
    """The effective config; with ``wait``, held until the revision differs or timeout.

    Only here (the sandbox's own supervisor, authenticated) does it carry the values of
    the stored credentials it binds: ``credential_values`` maps ``provider:credential`` to
    the value. Read after the config, so they are never older than its revision.
    """
    own_sandbox(claims, sandbox_id)
    gateway = gateway_of(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait_seconds, gateway.settings.longpoll_max)
    while True:
        ticket = gateway.feed.ticket()
        config = await _for_live_sandbox(gateway.sandboxes.config, sandbox_id)
        remaining = deadline - loop.time()
        # Answered when the revision moved, on timeout, or when the supervisor went away
        # (don't hold a handler, and shutdown, for it).
        if not wait or config.revision != wait or remaining <= 0:
            return await _with_values(gateway, config)
        if await request.is_disconnected():
            return await _with_values(gateway, config)
        await gateway.feed.wait(ticket, min(RECHECK_SECONDS, remaining))


async def _with_values(gateway: Gateway, config: EffectiveConfig) -> dict[str, Any]:
    data = config.to_dict()
    owners = sorted(config.statics.variables())
    data["credential_values"] = (
        await to_thread.run_sync(gateway.providers.credential_values, owners) if owners else {}
    )
    return data


@router.post("/sandboxes/{sandbox_id}/heartbeat")
async def supervisor_heartbeat(
    request: Request, sandbox_id: str, claims: Supervisor, body: Heartbeat
) -> dict[str, Any]:
    """Record the applied revision and conditions, and keep the metrics snapshot it carries
    (the latest replaces the one before; a refused snapshot refuses the whole heartbeat
    with 422 and changes nothing, so the previous snapshot stays)."""
    own_sandbox(claims, sandbox_id)
    gateway = gateway_of(request)
    conditions = [condition.model_dump() for condition in body.conditions]
    await _for_live_sandbox(
        gateway.sandboxes.heartbeat, sandbox_id, body.applied_revision, body.error, conditions
    )
    view = await _for_live_sandbox(gateway.sandboxes.get_by_id, sandbox_id)
    if body.snapshot is not None:
        gateway.sandbox_metrics.put(sandbox_id, view.name, body.snapshot)
    return {
        "revision": view.revision,
        "phase": view.phase.value,
        "token_expires_at": claims.expires_at,
    }


@router.post("/sandboxes/{sandbox_id}/logs")
async def supervisor_logs(
    request: Request, sandbox_id: str, claims: Supervisor, body: LogBatch
) -> dict[str, int]:
    own_sandbox(claims, sandbox_id)
    lines = [line.model_dump() for line in body.lines]
    count = await _for_live_sandbox(gateway_of(request).sandboxes.append_logs, sandbox_id, lines)
    return {"accepted": count}


@router.post(
    "/sandboxes/{sandbox_id}/events",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EventBatch.model_json_schema()}},
        }
    },
)
async def supervisor_events(
    request: Request, sandbox_id: str, claims: Supervisor
) -> dict[str, int]:
    """Store a batch of OCSF events (``EventBatch``), each as the JSON text it arrived as
    (:mod:`grantbox.gateway.shipped_events`); a batch that is not one is a 422 and stores
    nothing."""
    own_sandbox(claims, sandbox_id)
    try:
        events = read_shipped(await request.body(), time.time())
    except BatchRefused as refused:
        where = ("body", *refused.where.split(".")[:2]) if refused.where != "body" else ("body",)
        raise RequestValidationError(
            [{"loc": where, "msg": refused.message, "type": "value_error"}]
        ) from None
    count = await _for_live_sandbox(
        gateway_of(request).sandboxes.append_shipped, sandbox_id, events
    )
    return {"accepted": count}


@router.get(
    "/sandboxes/{sandbox_id}/exec/next",
    response_model=None,
    responses={204: {"description": "no exec request arrived in time"}},
)
async def supervisor_next_exec(
    request: Request,
    sandbox_id: str,
    claims: Supervisor,
    wait_seconds: float = Query(default=25.0, ge=0, le=300, alias="timeout"),
) -> Response | dict[str, Any]:
    """Long-poll for the next exec request of this sandbox; 204 when none arrives."""
    own_sandbox(claims, sandbox_id)
    gateway = gateway_of(request)
    await _for_live_sandbox(gateway.sandboxes.config, sandbox_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait_seconds, gateway.settings.longpoll_max)
    # Wait in short slices so a poller that went away stops here instead of taking (and
    # losing) the next request for its sandbox.
    while (remaining := deadline - loop.time()) > 0:
        if await request.is_disconnected():
            break
        item = await gateway.relay.next_request(sandbox_id, min(RECHECK_SECONDS, remaining))
        if item is None:
            continue
        if await request.is_disconnected():
            gateway.relay.return_request(item)
            break
        return item.to_dict()
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/exec/{exec_id}/output")
async def supervisor_exec_output(
    request: Request, sandbox_id: str, exec_id: str, claims: Supervisor, body: ExecOutput
) -> dict[str, bool]:
    """One output chunk. Waits while the operator is behind (the buffer is bounded);
    ``429 busy`` means: send the same chunk again; ``404``: the operator is gone, stop."""
    own_sandbox(claims, sandbox_id)
    outcome = await gateway_of(request).relay.output(sandbox_id, exec_id, body.stream, body.data)
    if outcome is Delivery.GONE:
        raise NotFound("no open exec with this id for this sandbox")
    if outcome is Delivery.BUSY:
        raise Busy("the operator is reading slowly; send the same chunk again")
    return {"ok": True}


@router.get("/sandboxes/{sandbox_id}/exec/{exec_id}/input")
async def supervisor_exec_input(
    request: Request,
    sandbox_id: str,
    exec_id: str,
    claims: Supervisor,
    wait_seconds: float = Query(default=25.0, ge=0, le=300, alias="timeout"),
) -> dict[str, Any]:
    """Long-poll for the operator's input: ``{"items": [{"data"}|{"eof"}|{"resize"}]}``,
    empty when none came in time; 404 once the exec is over."""
    own_sandbox(claims, sandbox_id)
    gateway = gateway_of(request)
    wait = min(wait_seconds, gateway.settings.longpoll_max)
    items = await gateway.relay.next_input(sandbox_id, exec_id, wait)
    if items is None:
        raise NotFound("no open exec with this id for this sandbox")
    return {"items": items}


@router.post("/sandboxes/{sandbox_id}/exec/{exec_id}/exit")
async def supervisor_exec_exit(
    request: Request, sandbox_id: str, exec_id: str, claims: Supervisor, body: ExecExit
) -> dict[str, bool]:
    own_sandbox(claims, sandbox_id)
    if not gateway_of(request).relay.exit(sandbox_id, exec_id, body.exit_code):
        raise NotFound("no open exec with this id for this sandbox")
    return {"ok": True}


@router.post("/sandboxes/{sandbox_id}/exit")
async def supervisor_sandbox_exit(
    request: Request, sandbox_id: str, claims: Supervisor, body: SandboxExit
) -> dict[str, bool]:
    """The sandbox's own command ended: its status and, when it could not even start, why
    (``sandbox get`` shows ``exited`` for 0 and ``error`` with this reason otherwise)."""
    own_sandbox(claims, sandbox_id)
    gateway = gateway_of(request)
    await _for_live_sandbox(gateway.sandboxes.record_exit, sandbox_id, body.exit_code, body.reason)
    return {"ok": True}


@router.post("/sandboxes/{sandbox_id}/token")
async def supervisor_renew_token(
    request: Request, sandbox_id: str, claims: Supervisor
) -> dict[str, Any]:
    """A fresh token for the same sandbox, while the sandbox exists and is not deleting."""
    own_sandbox(claims, sandbox_id)
    gateway = gateway_of(request)
    await _for_live_sandbox(gateway.sandboxes.config, sandbox_id)
    token = gateway.issuer.mint(sandbox_id)
    verified = gateway.issuer.verify(token)
    return {"token": token, "expires_at": verified.expires_at}
