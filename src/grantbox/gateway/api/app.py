"""Building the FastAPI app from settings: store, keys, services and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from grantbox import __version__
from grantbox.drivers.protocol import ComputeDriver
from grantbox.gateway.auth import OperatorToken, SupervisorTokenIssuer
from grantbox.gateway.catalog import Catalog, load_builtins
from grantbox.gateway.changes import ChangeFeed
from grantbox.gateway.credentials import CredentialSealer
from grantbox.gateway.errors import GatewayError
from grantbox.gateway.exec_relay import ExecRelay
from grantbox.gateway.sandbox_metrics import SandboxMetrics
from grantbox.gateway.services import (
    ProfileService,
    ProviderService,
    SandboxOrchestrator,
    SandboxService,
)
from grantbox.gateway.settings import GatewaySettings
from grantbox.gateway.state_dir import secure_tree
from grantbox.gateway.storage import Store

from . import health_routes, operator_routes, supervisor_routes
from .limits import BodyLimit
from .observability import Metrics, PhaseCollector, RequestObserver
from .state import Gateway

log = logging.getLogger("grantbox.gateway")


def build_gateway(
    settings: GatewaySettings, driver: ComputeDriver | None, driver_name: str = ""
) -> Gateway:
    secure_tree(settings.state_dir)
    store = Store.open(settings.database_url)
    catalog = Catalog(load_builtins(settings.builtin_profiles_dir))
    feed = ChangeFeed()
    relay = ExecRelay()
    issuer = SupervisorTokenIssuer.load_or_create(
        settings.signing_key_path, settings.token_audience, settings.supervisor_token_ttl
    )
    sandboxes = SandboxService(
        store, catalog, feed, settings.heartbeat_stale_after, settings.agent_uids
    )
    metrics = Metrics()
    metrics.registry.register(PhaseCollector(sandboxes.count_by_phase))
    sandbox_metrics = SandboxMetrics(sandboxes.live_ids, settings.heartbeat_stale_after)
    metrics.registry.register(sandbox_metrics)
    orchestrator = SandboxOrchestrator(sandboxes, issuer, driver, relay)
    orchestrator.driver_name = driver_name if driver is not None else ""
    return Gateway(
        settings=settings,
        store=store,
        catalog=catalog,
        feed=feed,
        relay=relay,
        operator_token=OperatorToken.load_or_create(settings.operator_token_path),
        issuer=issuer,
        profiles=ProfileService(store, catalog, feed),
        providers=ProviderService(
            store, catalog, CredentialSealer.load_or_create(settings.credentials_key_path), feed
        ),
        sandboxes=sandboxes,
        orchestrator=orchestrator,
        metrics=metrics,
        sandbox_metrics=sandbox_metrics,
    )


def create_app(
    settings: GatewaySettings,
    driver: ComputeDriver | None = None,
    *,
    driver_name: str = "",
    resume_sandboxes: bool = False,
) -> FastAPI:
    """The gateway app. Opens (and migrates) the store and loads or creates its keys.

    ``resume_sandboxes`` is for a single host whose supervisors died with the previous
    control plane (``grantbox up``): once serving, every sandbox that was running is
    started again."""
    gateway = build_gateway(settings, driver, driver_name)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        gateway.feed.bind(asyncio.get_running_loop())
        gateway.sandboxes.records.bind(asyncio.get_running_loop())
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(gateway.orchestrator.follow_driver()),
            asyncio.create_task(gateway.orchestrator.reconcile_driver()),
        ]
        if resume_sandboxes:
            tasks.append(gateway.orchestrator.start_resuming())
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            gateway.store.close()

    app = FastAPI(
        title="grantbox gateway",
        version=__version__,
        description="Control plane for grantbox sandboxes: profiles, providers, sandboxes, "
        "and the supervisor API.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.include_router(health_routes.router)
    app.include_router(operator_routes.router)
    app.include_router(supervisor_routes.router)

    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        if exc.status in (409, 422):
            gateway.metrics.refused_writes.labels(exc.code).inc()
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        log.error("database error: %s", type(exc.orig).__name__ if exc.orig else type(exc))
        body = {"error": "unavailable", "message": "the database is unavailable; retry later"}
        return JSONResponse(body, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors()[:20]:
            where = ".".join(str(p) for p in error.get("loc", ()))
            problems.append({"field": where, "message": str(error.get("msg", "invalid"))})
        first = problems[0] if problems else {"field": "", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return JSONResponse(
            {"error": "invalid_request", "message": message, "details": problems}, 422
        )

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestObserver, metrics=gateway.metrics)
    return app
