"""Prometheus instruments of the grant engine, registered on a registry the caller chooses."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)
SUCCESS = "success"
FAILURE = "failure"


class GrantMetrics:
    """Grants by outcome and reason, grant latency, and what the cache did for callers.

    Without a ``registry`` the instruments get a private one (as the proxy's do), so any
    number of engines can live in one process; serve :attr:`registry` to expose them.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        target = CollectorRegistry() if registry is None else registry
        self.registry = target
        self.grants = Counter(
            "grantbox_token_grants",
            "Token requests made (SVID fetch + token endpoint), by outcome and failure reason",
            ["outcome", "reason"],
            registry=target,
        )
        self.latency = Histogram(
            "grantbox_token_grant_duration_seconds",
            "Duration of one token request, SVID fetch included",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.hits = Counter(
            "grantbox_token_cache_hits", "obtain() calls served a cached token", registry=target
        )
        self.misses = Counter(
            "grantbox_token_cache_misses",
            "obtain() calls that started a token request",
            registry=target,
        )
        self.coalesced = Counter(
            "grantbox_token_cache_coalesced_waits",
            "obtain() calls that waited for a token request another caller started",
            registry=target,
        )
        self.fresh_svid_retries = Counter(
            "grantbox_token_fresh_svid_retries",
            "Token requests repeated with a fresh JWT-SVID after the issuer refused an old one",
            registry=target,
        )
        self.failures_served = Counter(
            "grantbox_token_cache_failures_served",
            "obtain() calls answered with a remembered failure during backoff",
            ["reason"],
            registry=target,
        )
        self.refreshes = Counter(
            "grantbox_token_refreshes",
            "Background renewals started for tokens in their last 10 % of life",
            registry=target,
        )
        self.entries = Gauge(
            "grantbox_token_cache_entries", "Keys held by the token cache", registry=target
        )

    def grant_finished(self, reason: str | None, seconds: float) -> None:
        outcome = SUCCESS if reason is None else FAILURE
        self.grants.labels(outcome=outcome, reason=reason or "").inc()
        self.latency.labels(outcome=outcome).observe(seconds)
