"""Sandbox proxy metrics on the gateway's ``/metrics``: the latest snapshot each supervisor
sent with its heartbeat, re-exposed with a ``sandbox`` label.

A snapshot is a list of samples ``{"name", "type", "labels", "value"}`` (``name`` is the
sample's name, ``grantbox_proxy_requests_total``; ``type`` its family's). It comes from a
process the gateway does not fully trust, so :func:`parse` accepts only the families on
:data:`FAMILIES` with exactly their label names, short plain label values, finite numbers,
at most :data:`MAX_SERIES` series and :data:`MAX_BYTES` bytes of JSON. Help texts are the
gateway's own.

Snapshots live in memory only: one per sandbox, replaced by the next, gone when the sandbox
is deleted (or being deleted) or when the last one is older than the heartbeat staleness
setting. Counters are the supervisor's own: a restarted supervisor starts them at zero again,
which Prometheus reads as a counter reset. Several gateway replicas each expose what their
own heartbeats brought; scrape them all and sum by ``sandbox``.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

# A supervisor's registry holds about 90 series (11 KB of JSON): room for growth, not abuse.
MAX_SERIES = 500
MAX_BYTES = 64 * 1024
MAX_LABEL_VALUE = 64
# Every label value our instruments use is an enum value, a status code or a bucket bound.
_LABEL_VALUE = re.compile(rf"[A-Za-z0-9_.+\-]{{0,{MAX_LABEL_VALUE}}}")
SANDBOX_LABEL = "sandbox"

log = logging.getLogger("grantbox.gateway")


@dataclass(frozen=True, slots=True)
class Family:
    type: str
    help: str
    labels: tuple[str, ...] = ()


# The grantbox_ families a supervisor's registry holds (proxy, grant engine, outbox).
FAMILIES: dict[str, Family] = {
    "grantbox_proxy_requests": Family(
        "counter", "Requests (and CONNECTs) decided by the proxy.", ("decision", "code")
    ),
    "grantbox_proxy_injections": Family(
        "counter",
        "Token injections by outcome (injected, or the grant failure reason).",
        ("outcome",),
    ),
    "grantbox_proxy_active_connections": Family("gauge", "Agent connections currently open."),
    "grantbox_proxy_refused_connections": Family(
        "counter", "Agent connections refused because the connection cap was reached."
    ),
    "grantbox_proxy_accept_errors": Family("counter", "accept() failures of the proxy."),
    # Only with proxy workers: each worker queues its events for the supervisor.
    "grantbox_proxy_events_dropped": Family(
        "counter", "OCSF events dropped because the event sink could not keep up."
    ),
    "grantbox_proxy_bytes": Family(
        "counter",
        "Bytes relayed, by direction (upstream = agent to destination).",
        ("direction",),
    ),
    "grantbox_token_grants": Family(
        "counter", "Token requests made, by outcome and failure reason.", ("outcome", "reason")
    ),
    "grantbox_token_grant_duration_seconds": Family(
        "histogram", "Duration of one token request, SVID fetch included.", ("outcome",)
    ),
    "grantbox_token_cache_hits": Family("counter", "obtain() calls served a cached token."),
    "grantbox_token_cache_misses": Family(
        "counter", "obtain() calls that started a token request."
    ),
    "grantbox_token_cache_coalesced_waits": Family(
        "counter", "obtain() calls that waited for a token request another caller started."
    ),
    "grantbox_token_fresh_svid_retries": Family(
        "counter", "Token requests repeated with a fresh JWT-SVID."
    ),
    "grantbox_token_cache_failures_served": Family(
        "counter", "obtain() calls answered with a remembered failure.", ("reason",)
    ),
    "grantbox_token_refreshes": Family(
        "counter", "Background renewals of tokens in their last 10 % of life."
    ),
    "grantbox_token_cache_entries": Family("gauge", "Keys held by the token cache."),
    "grantbox_supervisor_outbox_queued": Family(
        "gauge", "Events and log lines waiting for the gateway.", ("kind",)
    ),
    "grantbox_supervisor_outbox_capacity": Family(
        "gauge", "Items an outbox holds before it drops.", ("kind",)
    ),
    "grantbox_supervisor_outbox_dropped": Family(
        "counter", "Events and log lines lost: outbox_full, or refused.", ("kind", "reason")
    ),
    "grantbox_supervisor_outbox_refused_batches": Family(
        "counter", "Batches the gateway refused.", ("kind",)
    ),
}

# Sample name suffixes of each family type, with the extra label a suffix carries.
_SUFFIXES: dict[str, dict[str, tuple[str, ...]]] = {
    "counter": {"_total": ()},
    "gauge": {"": ()},
    "histogram": {"_bucket": ("le",), "_sum": (), "_count": ()},
}


def _sample_names() -> dict[str, tuple[str, frozenset[str]]]:
    names: dict[str, tuple[str, frozenset[str]]] = {}
    for family, spec in FAMILIES.items():
        for suffix, extra in _SUFFIXES[spec.type].items():
            names[family + suffix] = (family, frozenset(spec.labels + extra))
    return names


_SAMPLES = _sample_names()


@dataclass(frozen=True, slots=True)
class Series:
    family: str
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


class SnapshotRefused(ValueError):
    """A snapshot the gateway does not take; the message says which sample and why."""


def _series(index: int, raw: object) -> Series:
    where = f"sample {index}"
    if not isinstance(raw, Mapping) or set(raw) != {"name", "type", "labels", "value"}:
        raise SnapshotRefused(f"{where}: needs exactly name, type, labels and value")
    name, kind, labels, value = raw["name"], raw["type"], raw["labels"], raw["value"]
    if not isinstance(name, str) or name not in _SAMPLES:
        raise SnapshotRefused(f"{where}: not a sandbox metric the gateway accepts")
    family, label_names = _SAMPLES[name]
    if kind != FAMILIES[family].type:
        raise SnapshotRefused(f"{where}: {family} is a {FAMILIES[family].type}")
    if not isinstance(labels, Mapping) or set(labels) != label_names:
        raise SnapshotRefused(f"{where}: {name} takes the labels {sorted(label_names)}")
    for label, text in labels.items():
        if not isinstance(text, str) or not _LABEL_VALUE.fullmatch(text):
            raise SnapshotRefused(
                f"{where}: label {label} must be up to {MAX_LABEL_VALUE} letters, digits or _.+-"
            )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SnapshotRefused(f"{where}: value must be a number")
    number = float(value)
    if not math.isfinite(number) or (kind != "gauge" and number < 0):
        raise SnapshotRefused(f"{where}: value must be finite (and not negative for a {kind})")
    return Series(family, name, tuple(sorted(labels.items())), number)


def parse(samples: object) -> tuple[Series, ...]:
    """The series of a snapshot (JSON data, as parsed), or :class:`SnapshotRefused`."""
    if not isinstance(samples, Sequence) or isinstance(samples, str | bytes):
        raise SnapshotRefused("a snapshot is a list of samples")
    if len(samples) > MAX_SERIES:
        raise SnapshotRefused(f"the snapshot has {len(samples)} series; at most {MAX_SERIES}")
    try:
        size = len(orjson.dumps(samples))
    except TypeError:  # nested deeper than orjson writes (it reads deeper): not a snapshot
        raise SnapshotRefused("a sample is nested too deeply") from None
    if size > MAX_BYTES:
        raise SnapshotRefused(f"the snapshot has {size} bytes; at most {MAX_BYTES} are accepted")
    series = tuple(_series(index, raw) for index, raw in enumerate(samples))
    if len({(s.name, s.labels) for s in series}) != len(series):
        raise SnapshotRefused("a series appears twice in the snapshot")
    return series


@dataclass(frozen=True, slots=True)
class _Snapshot:
    sandbox: str
    received: float
    series: tuple[Series, ...]


class SandboxMetrics(Collector):
    """The latest snapshot per sandbox id, collected with a ``sandbox`` (name) label.

    ``live_ids`` (sandboxes not deleted nor being deleted) is asked at every scrape, so a
    deleted sandbox's series are gone from the next scrape on. Heartbeats store from the
    event loop, scrapes read from a worker thread: one lock guards the map.
    """

    def __init__(
        self,
        live_ids: Callable[[], Iterable[str]],
        stale_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._live_ids = live_ids
        self._stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: dict[str, _Snapshot] = {}

    def put(self, sandbox_id: str, sandbox_name: str, series: tuple[Series, ...]) -> None:
        with self._lock:
            self._latest[sandbox_id] = _Snapshot(sandbox_name, self._clock(), series)

    def current(self) -> dict[str, _Snapshot]:
        """Fresh snapshots of live sandboxes by id; drops the others. Nothing while the
        store cannot say which sandboxes live (a deleted one's series must not linger);
        the scrape still serves the gateway's own metrics."""
        try:
            live = set(self._live_ids())
        except Exception as exc:
            log.warning("cannot list sandboxes for their metrics: %s", type(exc).__name__)
            return {}
        oldest = self._clock() - self._stale_after
        with self._lock:
            for sandbox_id in [
                key
                for key, snap in self._latest.items()
                if key not in live or snap.received < oldest
            ]:
                del self._latest[sandbox_id]
            return dict(self._latest)

    def describe(self) -> Iterable[Metric]:
        """Registration asks for names only; do not touch the store for that."""
        return []

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for snapshot in self.current().values():
            for series in snapshot.series:
                metric = families.get(series.family)
                if metric is None:
                    spec = FAMILIES[series.family]
                    metric = families[series.family] = Metric(series.family, spec.help, spec.type)
                labels = {SANDBOX_LABEL: snapshot.sandbox, **dict(series.labels)}
                metric.add_sample(series.name, labels, series.value)
        return [families[name] for name in sorted(families)]
