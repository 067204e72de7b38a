"""Sandbox proxy metrics on the gateway's ``/metrics``: the latest snapshot each supervisor
sent with its heartbeat, re-exposed with a ``sandbox`` label.

A snapshot is a list of samples ``{"name", "type", "labels", "value"}`` (``name`` is the
sample's name, ``grantbox_proxy_requests_total``; ``type`` its family's). It comes from a
process the gateway does not fully trust, so :func:`read_snapshot` keeps only the families
on :data:`FAMILIES` with exactly their label names, and refuses the whole snapshot for a
label value that is not short and plain, a number that is not finite, more than
:data:`MAX_SERIES` series or :data:`MAX_BYTES` bytes of JSON. A sample of another family,
or with other label names, is skipped rather than refused: a supervisor newer than the
gateway may report a family or label this gateway does not know, and that must not cost the
sandbox every other series. Help texts are the gateway's own.

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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a snapshot brought: the series kept, and the samples skipped (by name, with
    the label names they had) because this gateway does not know them."""

    series: tuple[Series, ...]
    skipped: tuple[str, ...] = ()


class _Unknown(Exception):
    """A well-formed sample of a family, or with labels, this gateway does not know."""


def _series(index: int, raw: object) -> Series:
    where = f"sample {index}"
    if not isinstance(raw, Mapping) or set(raw) != {"name", "type", "labels", "value"}:
        raise SnapshotRefused(f"{where}: needs exactly name, type, labels and value")
    name, kind, labels, value = raw["name"], raw["type"], raw["labels"], raw["value"]
    if not isinstance(name, str):
        raise SnapshotRefused(f"{where}: name must be a string")
    if not isinstance(labels, Mapping) or not all(isinstance(k, str) for k in labels):
        raise SnapshotRefused(f"{where}: labels must map names to values")
    for label, text in labels.items():
        if not isinstance(text, str) or not _LABEL_VALUE.fullmatch(text):
            raise SnapshotRefused(
                f"{where}: label {label} must be up to {MAX_LABEL_VALUE} letters, digits or _.+-"
            )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SnapshotRefused(f"{where}: value must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise SnapshotRefused(f"{where}: value must be finite")
    if name not in _SAMPLES or set(labels) != _SAMPLES[name][1]:
        raise _Unknown(_described(name, labels))
    family = _SAMPLES[name][0]
    if kind != FAMILIES[family].type:
        raise SnapshotRefused(f"{where}: {family} is a {FAMILIES[family].type}")
    if kind != "gauge" and number < 0:
        raise SnapshotRefused(f"{where}: value must not be negative for a {kind}")
    return Series(family, name, tuple(sorted(labels.items())), number)


def _described(name: str, labels: Mapping[str, object]) -> str:
    shown = name if _LABEL_VALUE.fullmatch(name) else "(a name that is not plain)"
    plain = sorted(k for k in labels if _LABEL_VALUE.fullmatch(k))
    return f"{shown}{{{','.join(plain)}}}"


def parse(samples: object) -> tuple[Series, ...]:
    """The series a snapshot (JSON data, as parsed) brings, or :class:`SnapshotRefused`."""
    return read_snapshot(samples).series


def read_snapshot(samples: object) -> Snapshot:
    """A snapshot's series and what was skipped, or :class:`SnapshotRefused`."""
    if not isinstance(samples, Sequence) or isinstance(samples, str | bytes):
        raise SnapshotRefused("a snapshot is a list of samples")
    if len(samples) > MAX_SERIES:
        raise SnapshotRefused(f"the snapshot has {len(samples)} series; at most {MAX_SERIES}")
    try:
        size = len(orjson.dumps(samples))
    except TypeError:  # nested deeper than orjson writes (it reads deeper), or a key that
        # is not a string: not JSON a supervisor sent
        raise SnapshotRefused(
            "a sample is not plain JSON (nested too deeply, or a key not a string)"
        ) from None
    if size > MAX_BYTES:
        raise SnapshotRefused(f"the snapshot has {size} bytes; at most {MAX_BYTES} are accepted")
    kept: list[Series] = []
    skipped: list[str] = []
    for index, raw in enumerate(samples):
        try:
            kept.append(_series(index, raw))
        except _Unknown as unknown:
            skipped.append(str(unknown))
    series = tuple(kept)
    if len({(s.name, s.labels) for s in series}) != len(series):
        raise SnapshotRefused("a series appears twice in the snapshot")
    return Snapshot(series, tuple(sorted(set(skipped))))


@dataclass(frozen=True, slots=True)
class _Stored:
    sandbox: str
    received: float
    series: tuple[Series, ...]
    skipped: tuple[str, ...]


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
        self._latest: dict[str, _Stored] = {}

    def put(self, sandbox_id: str, sandbox_name: str, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the sandbox's latest; say once (until it changes) what of
        it this gateway skipped."""
        with self._lock:
            before = self._latest.get(sandbox_id)
            self._latest[sandbox_id] = _Stored(
                sandbox_name, self._clock(), snapshot.series, snapshot.skipped
            )
        if snapshot.skipped and (before is None or before.skipped != snapshot.skipped):
            log.warning(
                "sandbox %s reports metrics this gateway does not know (a newer supervisor?); "
                "skipped: %s",
                sandbox_name,
                ", ".join(snapshot.skipped[:10]),
            )

    def current(self) -> dict[str, _Stored]:
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
