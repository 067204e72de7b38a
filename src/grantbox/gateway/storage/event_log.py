"""A sandbox's stored events: append a batch, keep the newest, read a page.

The SQL side of :mod:`grantbox.gateway.event_batches`, which decides what to read and what
to trim. Callers hold the session (and, for appends, the sandbox's row locked).
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.orm import Session

from grantbox.gateway.event_batches import (
    BatchIndex,
    LiveBatch,
    PackedBatch,
    Slot,
    choose,
    trim,
    unpack,
)

from .models import EventBatchRow, EventTextRow

_BATCHES = cast(Table, EventBatchRow.__table__)
_TEXTS = cast(Table, EventTextRow.__table__)


def append_batch(session: Session, sandbox_id: str, batch: PackedBatch, keep: int) -> int:
    """Store ``batch`` after the sandbox's newest event, then keep its newest ``keep``
    events; the first new event's number. The caller holds the sandbox's row locked, so
    two appends cannot take the same numbers."""
    following, kept = session.execute(
        select(
            func.max(EventBatchRow.first_seq + EventBatchRow.size),
            func.coalesce(func.sum(EventBatchRow.size - EventBatchRow.skip), 0),
        ).where(EventBatchRow.sandbox_id == sandbox_id)
    ).one()
    first_seq = int(following or 1)
    # Core INSERTs: two rows, none of the unit of work's bookkeeping.
    connection = session.connection()
    row = {
        "sandbox_id": sandbox_id,
        "first_seq": first_seq,
        "size": batch.size,
        "skip": 0,
        "ts_min": batch.ts_min,
        "ts_max": batch.ts_max,
        "times": batch.times,
        "kinds": batch.kinds,
    }
    [batch_id] = connection.execute(insert(_BATCHES), row).inserted_primary_key or (None,)
    connection.execute(insert(_TEXTS), {"batch_id": batch_id, "data": batch.data})
    excess = int(kept) + batch.size - keep
    if excess > 0:
        _drop_oldest(session, sandbox_id, excess, first_seq)
    return first_seq


def _drop_oldest(session: Session, sandbox_id: str, excess: int, newest: int) -> None:
    # Every batch keeps at least one event but the newest and, after a retention of 0, the
    # one before it; so ``excess + 2`` rows always hold the events to drop.
    oldest = session.execute(
        select(EventBatchRow.first_seq, EventBatchRow.size, EventBatchRow.skip)
        .where(EventBatchRow.sandbox_id == sandbox_id)
        .order_by(EventBatchRow.first_seq)
        .limit(excess + 2)
    ).all()
    plan = trim((LiveBatch(*row) for row in oldest), excess, newest)
    if plan.delete_below is not None:  # their texts go with them (ON DELETE CASCADE)
        session.execute(
            delete(EventBatchRow).where(
                EventBatchRow.sandbox_id == sandbox_id, EventBatchRow.first_seq < plan.delete_below
            )
        )
    if plan.hide_in is not None:
        session.execute(
            update(EventBatchRow)
            .where(EventBatchRow.sandbox_id == sandbox_id, EventBatchRow.first_seq == plan.hide_in)
            .values(skip=plan.skip)
        )


def read_page(
    session: Session,
    sandbox_id: str,
    *,
    after: int,
    since: float | None,
    tail: int | None,
    limit: int,
) -> tuple[list[tuple[Slot, str]], int]:
    """The chosen events (each with its JSON text), oldest first, and how many older
    matches ``tail`` left out. Only the batches holding a chosen event are read whole."""
    where = [
        EventBatchRow.sandbox_id == sandbox_id,
        EventBatchRow.first_seq + EventBatchRow.size - 1 > after,
    ]
    if since is not None:
        where.append(EventBatchRow.ts_max >= since)
    indexes = session.execute(
        select(
            EventBatchRow.id,
            EventBatchRow.first_seq,
            EventBatchRow.size,
            EventBatchRow.skip,
            EventBatchRow.times,
            EventBatchRow.kinds,
        )
        .where(*where)
        .order_by(EventBatchRow.first_seq)
    ).all()
    chosen, omitted = choose(
        (BatchIndex(*row) for row in indexes), after=after, since=since, tail=tail, limit=limit
    )
    wanted = sorted({slot.batch_id for slot in chosen})
    texts = {
        batch_id: unpack(data)
        for batch_id, data in session.execute(
            select(EventTextRow.batch_id, EventTextRow.data).where(
                EventTextRow.batch_id.in_(wanted)
            )
        )
    }
    return [(slot, texts[slot.batch_id][slot.position]) for slot in chosen], omitted
