"""A sandbox's events stored a shipped batch to a row (``sandbox_event_batches``, with
the events' text in ``sandbox_event_texts``).

Each existing event becomes a batch of one that keeps its number, so a client following a
sandbox's events with ``after=`` goes on from where it was. New batches are numbered after
their sandbox's newest event. A downgrade turns batches back into one row per kept event;
the old table numbers events across all sandboxes, so they are numbered afresh.

Revision ID: 0005_event_batches
Revises: 0004_followup
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005_event_batches"
down_revision = "0004_followup"
branch_labels = None
depends_on = None

CHUNK = 2000

_events = sa.table(
    "sandbox_events",
    sa.column("seq", sa.Integer()),
    sa.column("sandbox_id", sa.String()),
    sa.column("ts", sa.Float()),
    sa.column("kind", sa.String()),
    sa.column("data", sa.Text()),
)
_batches = sa.table(
    "sandbox_event_batches",
    sa.column("id", sa.Integer()),
    sa.column("sandbox_id", sa.String()),
    sa.column("first_seq", sa.BigInteger()),
    sa.column("size", sa.Integer()),
    sa.column("skip", sa.Integer()),
    sa.column("ts_min", sa.Float()),
    sa.column("ts_max", sa.Float()),
    sa.column("times", sa.Text()),
    sa.column("kinds", sa.Text()),
)
_texts = sa.table(
    "sandbox_event_texts", sa.column("batch_id", sa.Integer()), sa.column("data", sa.Text())
)


def _create_events_table() -> None:
    op.create_table(
        "sandbox_events",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sandbox_id", sa.String(length=40), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sandbox_id"],
            ["sandboxes.id"],
            name=op.f("fk_sandbox_events_sandbox_id_sandboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_sandbox_events")),
    )
    with op.batch_alter_table("sandbox_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sandbox_events_sandbox_id"), ["sandbox_id"], unique=False
        )


def upgrade() -> None:
    op.create_table(
        "sandbox_event_batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sandbox_id", sa.String(length=40), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("skip", sa.Integer(), server_default="0", nullable=False),
        sa.Column("ts_min", sa.Float(), nullable=False),
        sa.Column("ts_max", sa.Float(), nullable=False),
        sa.Column("times", sa.Text(), nullable=False),
        sa.Column("kinds", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sandbox_id"],
            ["sandboxes.id"],
            name=op.f("fk_sandbox_event_batches_sandbox_id_sandboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_event_batches")),
        sa.UniqueConstraint(
            "sandbox_id", "first_seq", name=op.f("uq_sandbox_event_batches_sandbox_id")
        ),
    )
    op.create_table(
        "sandbox_event_texts",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["sandbox_event_batches.id"],
            name=op.f("fk_sandbox_event_texts_batch_id_sandbox_event_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_sandbox_event_texts")),
    )
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(
            sa.select(_events).where(_events.c.seq > last).order_by(_events.c.seq).limit(CHUNK)
        ).all()
        if not rows:
            break
        connection.execute(
            _batches.insert(),
            [
                {
                    "sandbox_id": row.sandbox_id,
                    "first_seq": row.seq,
                    "size": 1,
                    "skip": 0,
                    "ts_min": row.ts,
                    "ts_max": row.ts,
                    "times": json.dumps([row.ts]),
                    "kinds": json.dumps([row.kind]),
                }
                for row in rows
            ],
        )
        # Old numbers are unique across sandboxes, so each names its new batch.
        ids = dict(
            connection.execute(
                sa.select(_batches.c.first_seq, _batches.c.id).where(
                    _batches.c.first_seq.between(rows[0].seq, rows[-1].seq)
                )
            ).all()
        )
        connection.execute(
            _texts.insert(), [{"batch_id": ids[row.seq], "data": f"[{row.data}]"} for row in rows]
        )
        last = rows[-1].seq
    with op.batch_alter_table("sandbox_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sandbox_events_sandbox_id"))
    op.drop_table("sandbox_events")


def downgrade() -> None:
    _create_events_table()
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_batches, _texts.c.data)
        .join(_texts, _texts.c.batch_id == _batches.c.id)
        .order_by(_batches.c.sandbox_id, _batches.c.first_seq)
    ).all()
    for row in rows:
        times, kinds, texts = json.loads(row.times), json.loads(row.kinds), json.loads(row.data)
        kept = range(row.skip, row.size)
        if kept:
            connection.execute(
                _events.insert(),
                [
                    {
                        "sandbox_id": row.sandbox_id,
                        "ts": times[i],
                        "kind": kinds[i],
                        "data": json.dumps(texts[i]),
                    }
                    for i in kept
                ],
            )
    op.drop_table("sandbox_event_texts")
    op.drop_table("sandbox_event_batches")
