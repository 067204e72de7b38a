"""A sandbox's events stored a batch to a row, and the plans for reading and trimming them.

A supervisor ships up to 1,000 events at a time, one for every request its proxy served.
Storing each as its own row cost the gateway more than reading them (an INSERT, an index
entry and a share of the retention trim per event), so a batch is stored as one row: the
events' texts as one JSON array, their times and kinds beside it, and the sequence number
of the first. Event ``first_seq + i`` is the batch's ``i``-th event; numbers rise without
gaps within a sandbox. Retention trims whole batches and hides the front of the oldest kept
one (``skip``), so a sandbox keeps exactly its newest events. Pure: the storage layer runs
these plans (:mod:`grantbox.gateway.storage.event_log`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec
import orjson

from grantbox.gateway.shipped_events import StoredEvent


class PackedBatch(NamedTuple):
    """What one row holds for a batch (:func:`pack`)."""

    data: str  # the events' JSON texts as one JSON array
    times: str  # their times (epoch seconds) as a JSON array
    kinds: str  # their kinds as a JSON array
    ts_min: float
    ts_max: float
    size: int


def pack(events: Sequence[StoredEvent]) -> PackedBatch:
    """A non-empty batch as one row. Each event's text is already JSON (read or encoded
    by :mod:`grantbox.gateway.shipped_events`), so joining them is the array."""
    if not events:
        raise ValueError("a stored batch holds at least one event")
    times = [event.ts for event in events]
    return PackedBatch(
        data="[" + ",".join(event.data for event in events) + "]",
        times=orjson.dumps(times).decode(),
        kinds=orjson.dumps([event.kind for event in events]).decode(),
        ts_min=min(times),
        ts_max=max(times),
        size=len(events),
    )


_TEXTS = msgspec.json.Decoder(list[msgspec.Raw])


def unpack(data: str) -> list[str]:
    """The events' JSON texts of a stored batch, in order (none of them parsed)."""
    return [bytes(raw).decode("utf-8") for raw in _TEXTS.decode(data)]


class BatchIndex(NamedTuple):
    """A stored batch without its events' texts: enough to choose events from it."""

    id: int
    first_seq: int
    size: int
    skip: int
    times: str
    kinds: str


class Slot(NamedTuple):
    """One chosen event: where its text is (batch row, position) and what a page shows."""

    batch_id: int
    position: int
    seq: int
    ts: float
    kind: str


def slots(batch: BatchIndex, after: int, since: float | None) -> list[Slot]:
    """The batch's kept events numbered above ``after`` and (with ``since``) at or after
    that time, oldest first."""
    start = max(batch.skip, after + 1 - batch.first_seq)
    if start >= batch.size:
        return []
    times: list[float] = orjson.loads(batch.times)
    kinds: list[str] = orjson.loads(batch.kinds)
    return [
        Slot(batch.id, position, batch.first_seq + position, times[position], kinds[position])
        for position in range(start, batch.size)
        if since is None or times[position] >= since
    ]


def choose(
    batches: Iterable[BatchIndex],
    *,
    after: int,
    since: float | None,
    tail: int | None,
    limit: int,
) -> tuple[list[Slot], int]:
    """The events a page shows, oldest first, from ``batches`` in ascending order: with
    ``tail``, the newest ``tail`` matches and how many older matches it left out; else the
    oldest ``limit`` matches (and 0)."""
    if tail is None:
        chosen: list[Slot] = []
        for batch in batches:
            chosen.extend(slots(batch, after, since))
            if len(chosen) >= limit:
                return chosen[:limit], 0
        return chosen, 0
    matches = [slot for batch in batches for slot in slots(batch, after, since)]
    kept = matches[len(matches) - tail :] if tail > 0 else []
    return kept, len(matches) - len(kept)


class LiveBatch(NamedTuple):
    """A stored batch as retention sees it."""

    first_seq: int
    size: int
    skip: int


class Trim(NamedTuple):
    """What retention changes: delete the batches below ``delete_below`` (a ``first_seq``),
    and hide the front of the batch at ``hide_in`` up to ``skip`` (when not None)."""

    delete_below: int | None
    hide_in: int | None
    skip: int


def trim(oldest_first: Iterable[LiveBatch], excess: int, newest_first_seq: int) -> Trim:
    """Drop ``excess`` kept events, the oldest first. The newest batch is never deleted,
    only hidden, so the next batch's numbers continue from it."""
    delete_below: int | None = None
    for batch in oldest_first:
        if excess <= 0:
            break
        live = batch.size - batch.skip
        if live <= excess and batch.first_seq != newest_first_seq:
            excess -= live
            delete_below = batch.first_seq + 1
            continue
        return Trim(delete_below, batch.first_seq, batch.skip + min(excess, live))
    return Trim(delete_below, None, 0)
