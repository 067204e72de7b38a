"""The supervisor's own Prometheus metrics: how its record of the sandbox is shipping.

``grantbox_supervisor_outbox_*`` are read from the :class:`~.shipper.Shipper` when scraped
(no second set of counters to keep in step), beside the proxy's and grant engine's metrics
in the supervisor's registry:

* ``grantbox_supervisor_outbox_queued{kind}``: events or log lines waiting for the gateway;
* ``grantbox_supervisor_outbox_capacity{kind}``: how many the outbox holds before dropping;
* ``grantbox_supervisor_outbox_dropped_total{kind,reason}``: items lost, ``outbox_full``
  (the gateway was away or slow for too long) or ``refused`` (the gateway refused the item
  alone);
* ``grantbox_supervisor_outbox_refused_batches_total{kind}``: batches the gateway refused
  (each is split, and a single refused item dropped).

Scrapes run on the metrics server's thread; they only read counters and queue lengths.

:func:`snapshot` turns the whole registry into the samples the heartbeat carries to the
gateway, which serves them on its ``/metrics`` with a ``sandbox`` label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .shipper import KINDS, Shipper

PREFIX = "grantbox_supervisor_outbox"


class OutboxCollector(Collector):
    def __init__(self, shipper: Shipper) -> None:
        self._shipper = shipper

    def collect(self) -> Iterable[Metric]:
        shipper = self._shipper
        queued = GaugeMetricFamily(
            f"{PREFIX}_queued", "Events and log lines waiting for the gateway.", labels=["kind"]
        )
        capacity = GaugeMetricFamily(
            f"{PREFIX}_capacity", "Items an outbox holds before it drops.", labels=["kind"]
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_dropped",
            "Events and log lines lost: outbox_full, or refused by the gateway.",
            labels=["kind", "reason"],
        )
        refused = CounterMetricFamily(
            f"{PREFIX}_refused_batches",
            "Batches the gateway refused (split; single refused items dropped).",
            labels=["kind"],
        )
        for kind in KINDS:
            queued.add_metric([kind], shipper.queued(kind))
            capacity.add_metric([kind], shipper.capacity)
            dropped.add_metric([kind, "outbox_full"], shipper.dropped(kind))
            dropped.add_metric([kind, "refused"], shipper.refused_items[kind])
            refused.add_metric([kind], shipper.refused_batches[kind])
        yield from (queued, capacity, dropped, refused)


def register_outbox_metrics(registry: CollectorRegistry, shipper: Shipper) -> None:
    registry.register(OutboxCollector(shipper))


def snapshot(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """Every grantbox_ sample as ``{name, type, labels, value}`` (typed data, not exposition
    text). ``_created`` samples are left out: the gateway's series are only the values."""
    samples: list[dict[str, Any]] = []
    for family in registry.collect():
        if not family.name.startswith("grantbox_"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created") or not math.isfinite(sample.value):
                continue
            samples.append(
                {
                    "name": sample.name,
                    "type": family.type,
                    "labels": dict(sample.labels),
                    "value": sample.value,
                }
            )
    return samples
