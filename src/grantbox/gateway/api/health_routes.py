"""Liveness, readiness and Prometheus metrics; no authentication, no secrets."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .state import gateway_of

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    gateway = gateway_of(request)
    try:
        await to_thread.run_sync(gateway.store.ping)
    except Exception:
        reason = "the database does not answer; check that it runs and the gateway can reach it"
        return JSONResponse({"status": "unavailable", "reason": reason}, 503)
    return JSONResponse({"status": "ready", "database": gateway.store.backend})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    data = await to_thread.run_sync(generate_latest, gateway_of(request).metrics.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
