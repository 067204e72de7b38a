"""Metrics and structured request logs. Headers (and so tokens) are never logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
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


class PhaseCollector(Collector):
    """``grantbox_gateway_sandboxes{phase=...}``, counted from the store at scrape time."""

    def __init__(self, count: Callable[[], Mapping[str, int]]) -> None:
        self._count = count

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "grantbox_gateway_sandboxes", "Sandboxes by phase.", labels=["phase"]
        )

    def describe(self) -> Iterable[Metric]:
        """Registration asks for names only; do not touch the store for that."""
        yield self._family()

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        try:
            counts = self._count()
        except Exception as exc:  # a scrape must still report the request metrics
            access_log.warning("cannot count sandboxes for metrics: %s", type(exc).__name__)
            return
        for phase, number in sorted(counts.items()):
            family.add_metric([phase], number)
        yield family


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
            access_log.info("request", extra={"fields": record})
