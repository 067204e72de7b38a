"""One set of proxy metrics out of many processes.

Each worker keeps its own Prometheus registry and sends a :func:`snapshot` of it now and
then; the parent registers a :class:`PoolMetrics` collector that shows the sum, so a scrape
(or a sandbox's heartbeat) sees one ``grantbox_proxy_requests_total`` however many workers
served. Counters of a worker that died are kept (folded into a base), so a restart does not
make a counter go backwards; its gauges go with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

# One family as it crosses the wire: name, help, type, unit, [[sample, labels, value]].
Family = dict[str, Any]
SampleKey = tuple[str, str, tuple[tuple[str, str], ...]]  # family, sample, labels

_CUMULATIVE = frozenset({"counter", "histogram", "summary"})


def snapshot(registry: CollectorRegistry) -> list[Family]:
    """Every family of ``registry`` as plain data."""
    return [
        {
            "name": metric.name,
            "documentation": metric.documentation,
            "type": metric.type,
            "unit": metric.unit,
            "samples": [[s.name, dict(s.labels), float(s.value)] for s in metric.samples],
        }
        for metric in registry.collect()
    ]


def _created(sample: str) -> bool:
    return sample.endswith("_created")


def _add(
    totals: dict[SampleKey, float], families: Iterable[Family], *, cumulative_only: bool
) -> None:
    for family in families:
        if cumulative_only and family["type"] not in _CUMULATIVE:
            continue
        for name, labels, value in family["samples"]:
            key = (family["name"], name, tuple(sorted(labels.items())))
            if _created(name):
                totals[key] = min(totals.get(key, value), value)
            else:
                totals[key] = totals.get(key, 0.0) + value


def merge(
    snapshots: Iterable[list[Family]], base: Mapping[SampleKey, float] | None = None
) -> list[Metric]:
    """The families of all ``snapshots`` with each sample summed (``_created``: the
    earliest), plus ``base`` (what retired workers counted)."""
    meta: dict[str, Family] = {}
    totals: dict[SampleKey, float] = dict(base or {})
    for families in snapshots:
        for family in families:
            meta.setdefault(family["name"], family)
        _add(totals, families, cumulative_only=False)
    out: dict[str, Metric] = {}
    for (family_name, sample, labels), value in sorted(totals.items()):
        known = meta.get(family_name)
        if known is None:  # only a retired worker knew it: its kind is unknown
            continue
        metric = out.get(family_name)
        if metric is None:
            metric = out[family_name] = Metric(
                family_name, known["documentation"], known["type"], known["unit"]
            )
        metric.add_sample(sample, dict(labels), value)
    return list(out.values())


class PoolMetrics(Collector):
    """The sum of the workers' (and the parent's own) registries, as one collector."""

    def __init__(self, *own: CollectorRegistry) -> None:
        self._own = own
        self._latest: dict[int, list[Family]] = {}
        self._base: dict[SampleKey, float] = {}
        self._families: dict[str, Family] = {}

    def update(self, slot: int, families: list[Family]) -> None:
        self._latest[slot] = families
        for family in families:
            self._families.setdefault(family["name"], {**family, "samples": []})

    def latest(self) -> dict[int, list[Family]]:
        """Each live worker's last snapshot, by worker (diagnostics and tests)."""
        return dict(self._latest)

    def retire(self, slot: int) -> None:
        """A worker ended: keep what its counters counted, forget its gauges."""
        families = self._latest.pop(slot, None)
        if families:
            _add(self._base, families, cumulative_only=True)

    def collect(self) -> Iterator[Metric]:
        snapshots = [snapshot(registry) for registry in self._own]
        snapshots.extend(self._latest.values())
        # Families only a retired worker reported still need their kind and help text.
        snapshots.append(list(self._families.values()))
        yield from merge(snapshots, self._base)
