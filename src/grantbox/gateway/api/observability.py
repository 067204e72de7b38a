"""Metrics and structured request logs. Headers (and so tokens) are never logged."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("grantbox.gateway.access")


class Metrics:
    """One registry per app, so several gateways in one process never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "grantbox_gateway_requests_total",
            "HTTP requests handled, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "grantbox_gateway_request_seconds",
            "Time to the response head, by route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.refused_writes = Counter(
            "grantbox_gateway_refused_writes_total",
            "Writes refused, by error code.",
            ["code"],
            registry=self.registry,
        )


def request_record(
    method: str, route: str, path: str, status: int, seconds: float, client: str
) -> dict[str, Any]:
    """One access-log record: no headers, no query string, no body."""
    return {
        "event": "http_request",
        "method": method,
        "route": route,
        "path": path,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "client": client,
    }


class RequestObserver:
    """ASGI middleware: count, time and log every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            elapsed = time.perf_counter() - started
            route_obj = scope.get("route")
            route = getattr(route_obj, "path_format", None) or "unmatched"
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            client = scope.get("client")
            record = request_record(
                method,
                route,
                str(scope.get("path", "")),
                status,
                elapsed,
                f"{client[0]}:{client[1]}" if client else "",
            )
            access_log.info(json.dumps(record, sort_keys=True))
