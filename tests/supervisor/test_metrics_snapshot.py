"""The heartbeat's metrics snapshot, taken from a supervisor's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from grantbox.proxy.metrics import ProxyMetrics
from grantbox.supervisor.metrics import snapshot


def test_snapshot_reads_grantbox_families_as_typed_samples() -> None:
    registry = CollectorRegistry()
    proxy = ProxyMetrics(registry)
    Counter("other_requests", "not ours", registry=registry).inc()
    Gauge("grantbox_nan", "skipped", registry=registry).set(float("nan"))
    proxy.requests.labels("denied", "policy_denied").inc(2)
    proxy.active_connections.inc()
    samples = snapshot(registry)
    assert {
        "name": "grantbox_proxy_requests_total",
        "type": "counter",
        "labels": {"decision": "denied", "code": "policy_denied"},
        "value": 2.0,
    } in samples
    assert {
        "name": "grantbox_proxy_active_connections",
        "type": "gauge",
        "labels": {},
        "value": 1.0,
    } in samples
    names = {s["name"] for s in samples}
    assert "other_requests_total" not in names and "grantbox_nan" not in names
    assert not [n for n in names if n.endswith("_created")]
