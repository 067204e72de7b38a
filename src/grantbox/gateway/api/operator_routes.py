"""Operator routes: profiles, providers, sandboxes. All need the operator token."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from grantbox import __version__
from grantbox.gateway.errors import Busy, Conflict, InvalidRequest, NotFound, NotRunning
from grantbox.gateway.exec_relay import Delivery
from grantbox.gateway.phase import STOPPED, Phase
from grantbox.gateway.services import MAX_PAGE, SandboxView
from grantbox.gateway.timestamps import parse_rfc3339

from .auth_deps import Operator
from .schemas import (
    AttachProvider,
    ExecCreate,
    ExecInput,
    ExecResize,
    ProfileDocuments,
    ProfileUpdate,
    ProviderCreate,
    ProviderUpdate,
    SandboxCreate,
)
from .state import gateway_of

router = APIRouter(prefix="/api/v1", dependencies=[Operator])

OMITTED_HEADER = "Grantbox-Omitted"
FOLLOW_BATCH = 1000
FOLLOW_RECHECK = 2.0  # seconds; covers entries stored by another replica
FOLLOW_KEEPALIVE = 15.0

# -- profiles -------------------------------------------------------------------------------


@router.get("/profiles", tags=["profiles"])
async def list_profiles(request: Request) -> list[dict[str, Any]]:
    records = await to_thread.run_sync(gateway_of(request).profiles.list_all)
    return [r.summary() for r in records]


@router.post("/profiles", status_code=201, tags=["profiles"])
async def import_profiles(request: Request, body: ProfileDocuments) -> dict[str, Any]:
    """Create-only import of one or more profiles; all are written or none."""
    records = await to_thread.run_sync(gateway_of(request).profiles.import_profiles, body.documents)
    return {"imported": [r.summary() for r in records]}


@router.post("/profiles/lint", tags=["profiles"])
async def lint_profiles(request: Request, body: ProfileDocuments) -> dict[str, Any]:
    diagnostics = gateway_of(request).profiles.lint(body.documents)
    errors = [d for d in diagnostics if d.severity == "error"]
    return {"valid": not errors, "diagnostics": [d.as_dict() for d in diagnostics]}


@router.get("/profiles/{profile_id}", tags=["profiles"])
async def export_profile(request: Request, profile_id: str) -> dict[str, Any]:
    record = await to_thread.run_sync(gateway_of(request).profiles.get, profile_id)
    return {"builtin": record.builtin, "document": record.export()}


@router.put("/profiles/{profile_id}", tags=["profiles"])
async def update_profile(request: Request, profile_id: str, body: ProfileUpdate) -> dict[str, Any]:
    """Replace a profile; the document must carry the exported ``resource_version``."""
    record = await to_thread.run_sync(
        gateway_of(request).profiles.update, profile_id, body.document
    )
    return record.summary()


@router.delete("/profiles/{profile_id}", status_code=204, tags=["profiles"])
async def delete_profile(request: Request, profile_id: str) -> Response:
    await to_thread.run_sync(gateway_of(request).profiles.delete, profile_id)
    return Response(status_code=204)


# -- providers ------------------------------------------------------------------------------


@router.get("/providers", tags=["providers"])
async def list_providers(request: Request) -> list[dict[str, Any]]:
    views = await to_thread.run_sync(gateway_of(request).providers.list_all)
    return [v.to_dict() for v in views]


@router.post("/providers", status_code=201, tags=["providers"])
async def create_provider(request: Request, body: ProviderCreate) -> dict[str, Any]:
    view = await to_thread.run_sync(
        gateway_of(request).providers.create,
        body.name,
        body.type,
        body.runtime_credentials,
        body.credentials,
    )
    return view.to_dict()


@router.get("/providers/{name}", tags=["providers"])
async def get_provider(request: Request, name: str) -> dict[str, Any]:
    return (await to_thread.run_sync(gateway_of(request).providers.get, name)).to_dict()


@router.patch("/providers/{name}", tags=["providers"])
async def update_provider(request: Request, name: str, body: ProviderUpdate) -> dict[str, Any]:
    view = await to_thread.run_sync(
        gateway_of(request).providers.update,
        name,
        body.resource_version,
        body.type,
        body.runtime_credentials,
        body.credentials,
    )
    return view.to_dict()


@router.delete("/providers/{name}", status_code=204, tags=["providers"])
async def delete_provider(request: Request, name: str) -> Response:
    await to_thread.run_sync(gateway_of(request).providers.delete, name)
    return Response(status_code=204)


# -- sandboxes ------------------------------------------------------------------------------


@router.get("/sandboxes", tags=["sandboxes"])
async def list_sandboxes(request: Request) -> list[dict[str, Any]]:
    views = await to_thread.run_sync(gateway_of(request).sandboxes.list_all)
    return [v.to_dict() for v in views]


@router.post("/sandboxes", status_code=201, tags=["sandboxes"])
async def create_sandbox(request: Request, body: SandboxCreate) -> dict[str, Any]:
    view = await gateway_of(request).orchestrator.create(
        body.name, body.providers, body.policy, body.command
    )
    return view.to_dict()


@router.get("/sandboxes/{name}", tags=["sandboxes"])
async def get_sandbox(request: Request, name: str) -> dict[str, Any]:
    return (await to_thread.run_sync(gateway_of(request).sandboxes.get, name)).to_dict()


@router.delete("/sandboxes/{name}", status_code=204, tags=["sandboxes"])
async def delete_sandbox(request: Request, name: str) -> Response:
    await gateway_of(request).orchestrator.delete(name)
    return Response(status_code=204)


@router.get("/sandboxes/{name}/config", tags=["sandboxes"])
async def sandbox_config(request: Request, name: str) -> dict[str, Any]:
    config = await to_thread.run_sync(gateway_of(request).sandboxes.config_by_name, name)
    return config.to_dict()


@router.post("/sandboxes/{name}/providers", tags=["sandboxes"])
async def attach_provider(request: Request, name: str, body: AttachProvider) -> dict[str, Any]:
    view = await to_thread.run_sync(
        gateway_of(request).sandboxes.attach, name, body.provider, body.resource_version
    )
    return view.to_dict()


@router.delete("/sandboxes/{name}/providers/{provider}", tags=["sandboxes"])
async def detach_provider(
    request: Request,
    name: str,
    provider: str,
    resource_version: int | None = Query(default=None),
) -> dict[str, Any]:
    view = await to_thread.run_sync(
        gateway_of(request).sandboxes.detach, name, provider, resource_version
    )
    return view.to_dict()


@router.post("/sandboxes/{name}/restart", tags=["sandboxes"])
async def restart_sandbox(request: Request, name: str) -> dict[str, Any]:
    """Stop the sandbox's supervisor (if any still runs) and start it again."""
    view = await gateway_of(request).orchestrator.restart(name)
    return view.to_dict()


def _since(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise InvalidRequest(f"since: {exc}") from None


_NDJSON: dict[int | str, dict[str, Any]] = {200: {"content": {"application/x-ndjson": {}}}}
_TAIL = Query(default=None, ge=0, le=MAX_PAGE, description="only the newest N")
_SINCE = Query(default=None, max_length=64, description="RFC 3339: only entries at or after")
_AFTER = Query(default=0, ge=0, le=2**62, description="only entries after this seq")
_FOLLOW = Query(default=False, description="keep the stream open and send new entries")


def _line(item: dict[str, Any]) -> bytes:
    return (json.dumps(item, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


async def _records(
    request: Request,
    name: str,
    kind: str,
    after: int,
    since: str | None,
    tail: int | None,
    follow: bool,
) -> StreamingResponse:
    """Logs or events as JSON lines; with ``follow``, held open and fed as entries arrive,
    ending with ``{"next_after": SEQ}`` (follow again from there) unless the sandbox is gone.

    Followers wake when this gateway stores new entries, and re-check every few seconds for
    entries another replica stored; a blank line now and then keeps idle streams alive.
    """
    sandboxes = gateway_of(request).sandboxes
    settings = gateway_of(request).settings
    fetch = sandboxes.log_page if kind == "logs" else sandboxes.event_page
    since_ts = _since(since)
    sandbox_id = await to_thread.run_sync(sandboxes.id_of, name)
    first = await to_thread.run_sync(
        lambda: fetch(sandbox_id, after=after, since=since_ts, tail=tail)
    )

    async def lines() -> AsyncIterator[bytes]:
        for item in first.items:
            yield _line(item)
        if not follow:
            return
        seen = first.last_seq or after
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        # A stream is held at most as long as any long-poll; then it tells the client where
        # to pick up, so a handler never lives unbounded and clients ride over restarts.
        deadline = loop.time() + settings.longpoll_max
        while True:
            if loop.time() >= deadline:
                yield _line({"next_after": seen})
                return
            ticket = sandboxes.records.ticket()
            try:
                page = await to_thread.run_sync(
                    functools.partial(
                        fetch, sandbox_id, after=seen, since=since_ts, limit=FOLLOW_BATCH
                    )
                )
            except NotFound:
                return  # the sandbox was deleted: nothing more will come
            for item in page.items:
                yield _line(item)
            if page.items:
                seen, quiet_since = page.last_seq, loop.time()
                if len(page.items) == FOLLOW_BATCH:
                    continue
            elif loop.time() - quiet_since >= FOLLOW_KEEPALIVE:
                quiet_since = loop.time()
                yield b"\n"
            await sandboxes.records.wait(
                ticket, max(0.0, min(FOLLOW_RECHECK, deadline - loop.time()))
            )

    headers = {OMITTED_HEADER: str(first.omitted)}
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)


@router.get(
    "/sandboxes/{name}/logs",
    tags=["sandboxes"],
    response_class=StreamingResponse,
    responses=_NDJSON,
)
async def sandbox_logs(
    request: Request,
    name: str,
    tail: int | None = _TAIL,
    since: str | None = _SINCE,
    after: int = _AFTER,
    follow: bool = _FOLLOW,
) -> StreamingResponse:
    """What the sandbox's command printed, oldest first; ``tail`` keeps the newest N and
    the ``Grantbox-Omitted`` header says how many older lines it left out."""
    return await _records(request, name, "logs", after, since, tail, follow)


@router.get(
    "/sandboxes/{name}/events",
    tags=["sandboxes"],
    response_class=StreamingResponse,
    responses=_NDJSON,
)
async def sandbox_events(
    request: Request,
    name: str,
    tail: int | None = _TAIL,
    since: str | None = _SINCE,
    after: int = _AFTER,
    follow: bool = _FOLLOW,
) -> StreamingResponse:
    """The proxy's OCSF events (one per decision), like ``logs``."""
    return await _records(request, name, "events", after, since, tail, follow)


def _refuse_unless_running(view: SandboxView) -> None:
    if view.phase is Phase.DELETING:
        raise NotRunning(f"sandbox '{view.name}' is being deleted")
    if view.phase in STOPPED:
        raise NotRunning(
            f"sandbox '{view.name}' is not running ({view.phase.value}: {view.phase_reason}); "
            f"start it again with `grantbox sandbox restart {view.name}`"
        )


@router.post(
    "/sandboxes/{name}/exec",
    tags=["sandboxes"],
    response_class=StreamingResponse,
    responses=_NDJSON,
)
async def exec_in_sandbox(request: Request, name: str, body: ExecCreate) -> StreamingResponse:
    """Run a command through the sandbox's supervisor; streams NDJSON: the exec id (where
    input goes), output chunks, then the exit. Refused at once when nothing runs there."""
    gateway = gateway_of(request)
    view = await to_thread.run_sync(gateway.sandboxes.get, name)
    _refuse_unless_running(view)
    try:
        exec_request = gateway.relay.submit(
            view.id,
            tuple(body.command),
            body.timeout_seconds,
            stdin=body.stdin or body.tty,
            tty=body.tty,
            rows=body.rows,
            cols=body.cols,
        )
    except asyncio.QueueFull:
        raise Conflict(f"sandbox '{name}' has too many pending exec requests") from None

    async def lines() -> AsyncIterator[bytes]:
        pickup = min(body.pickup_timeout_seconds, gateway.settings.longpoll_max)
        async for item in gateway.relay.stream(exec_request.exec_id, pickup):
            yield _line(item)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/sandboxes/{name}/exec/{exec_id}/input", tags=["sandboxes"])
async def exec_input(request: Request, name: str, exec_id: str, body: ExecInput) -> dict[str, bool]:
    """Bytes for the command's stdin (and/or its end). Waits while the sandbox is behind;
    ``429 busy`` means: send the same chunk again."""
    gateway = gateway_of(request)
    sandbox_id = await to_thread.run_sync(gateway.sandboxes.id_of, name)
    outcome = await gateway.relay.input(sandbox_id, exec_id, body.data, body.eof)
    if outcome is Delivery.GONE:
        raise NotFound("no open exec with this id for this sandbox, or it takes no input")
    if outcome is Delivery.BUSY:
        raise Busy("the command is not reading its input yet; send the chunk again")
    return {"ok": True}


@router.post("/sandboxes/{name}/exec/{exec_id}/resize", tags=["sandboxes"])
async def exec_resize(
    request: Request, name: str, exec_id: str, body: ExecResize
) -> dict[str, bool]:
    gateway = gateway_of(request)
    sandbox_id = await to_thread.run_sync(gateway.sandboxes.id_of, name)
    if not gateway.relay.resize(sandbox_id, exec_id, body.rows, body.cols):
        raise NotFound("no open exec on a terminal with this id for this sandbox")
    return {"ok": True}


# -- the control plane itself ---------------------------------------------------------------


@router.get("/status", tags=["status"])
async def status(request: Request) -> dict[str, Any]:
    """What runs here: version, database, compute driver, sandboxes by phase, and what the
    process that embeds the gateway (``grantbox up``) reports about its other parts."""
    gateway = gateway_of(request)
    counts = await to_thread.run_sync(gateway.sandboxes.count_by_phase)
    return {
        "version": __version__,
        "database": gateway.store.backend,
        "driver": gateway.orchestrator.driver_name or None,
        "sandboxes": counts,
        **gateway.status_extra,
    }
