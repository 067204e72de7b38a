"""Operator routes: profiles, providers, sandboxes. All need the operator token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from grantbox.gateway.errors import Conflict

from .auth_deps import Operator
from .schemas import (
    AttachProvider,
    ExecCreate,
    ProfileDocuments,
    ProfileUpdate,
    ProviderCreate,
    ProviderUpdate,
    SandboxCreate,
)
from .state import gateway_of

router = APIRouter(prefix="/api/v1", dependencies=[Operator])

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


@router.get("/sandboxes/{name}/logs", tags=["sandboxes"])
async def sandbox_logs(
    request: Request,
    name: str,
    since: int = Query(default=0, ge=0, le=2**62),
    limit: int = Query(default=1000, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    return await to_thread.run_sync(gateway_of(request).sandboxes.logs, name, since, limit)


@router.get("/sandboxes/{name}/events", tags=["sandboxes"])
async def sandbox_events(
    request: Request,
    name: str,
    since: int = Query(default=0, ge=0, le=2**62),
    limit: int = Query(default=1000, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    return await to_thread.run_sync(gateway_of(request).sandboxes.events, name, since, limit)


@router.post(
    "/sandboxes/{name}/exec",
    tags=["sandboxes"],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def exec_in_sandbox(request: Request, name: str, body: ExecCreate) -> StreamingResponse:
    """Run a command through the sandbox's supervisor; streams NDJSON chunks then the exit."""
    gateway = gateway_of(request)
    view = await to_thread.run_sync(gateway.sandboxes.get, name)
    try:
        exec_request = gateway.relay.submit(view.id, tuple(body.command), body.timeout_seconds)
    except asyncio.QueueFull:
        raise Conflict(f"sandbox '{name}' has too many pending exec requests") from None

    async def lines() -> AsyncIterator[bytes]:
        pickup = min(body.pickup_timeout_seconds, gateway.settings.longpoll_max)
        async for item in gateway.relay.stream(exec_request.exec_id, pickup):
            yield (json.dumps(item) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")
