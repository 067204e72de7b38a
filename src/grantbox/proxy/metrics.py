"""Prometheus metrics of one proxy instance.

Children the hot path updates are looked up once here (a ``labels()`` call takes a lock and
builds a key on every use).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ProxyMetrics:
    """Requests by decision and code, injections by outcome, connections and bytes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "grantbox_proxy_requests",
            "Requests (and CONNECTs) decided by the proxy.",
            ["decision", "code"],
            registry=self.registry,
        )
        self.injections = Counter(
            "grantbox_proxy_injections",
            "Token injections by outcome (injected, or the grant failure reason).",
            ["outcome"],
            registry=self.registry,
        )
        self.active_connections = Gauge(
            "grantbox_proxy_active_connections",
            "Agent connections currently open.",
            registry=self.registry,
        )
        self.refused_connections = Counter(
            "grantbox_proxy_refused_connections",
            "Agent connections refused because the connection cap was reached.",
            registry=self.registry,
        )
        self.accept_errors = Counter(
            "grantbox_proxy_accept_errors",
            "accept() failures (for example out of descriptors).",
            registry=self.registry,
        )
        self.bytes = Counter(
            "grantbox_proxy_bytes",
            "Bytes relayed, by direction (upstream = agent to destination).",
            ["direction"],
            registry=self.registry,
        )
        self.upstream_bytes = self.bytes.labels("upstream")
        self.downstream_bytes = self.bytes.labels("downstream")
