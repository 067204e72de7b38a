"""A kernel uid per sandbox agent: ``sandboxes.agent_uid``, unique.

Rows that exist already get uids from the default range in creation order, so no sandbox
runs on without one after the upgrade.

Revision ID: 0002_fence
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_fence"
down_revision = "0001"
branch_labels = None
depends_on = None

DEFAULT_FIRST = 1_900_000_000  # grantbox.gateway.agent_ids.DEFAULT_FIRST when written


def upgrade() -> None:
    with op.batch_alter_table("sandboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_uid", sa.BigInteger(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_sandboxes_agent_uid"), ["agent_uid"])
    sandboxes = sa.table("sandboxes", sa.column("id", sa.String), sa.column("agent_uid"))
    connection = op.get_bind()
    ids = connection.execute(sa.text("SELECT id FROM sandboxes ORDER BY created_at, id")).all()
    for offset, (sandbox_id,) in enumerate(ids):
        connection.execute(
            sandboxes.update()
            .where(sandboxes.c.id == sandbox_id)
            .values(agent_uid=DEFAULT_FIRST + offset)
        )


def downgrade() -> None:
    with op.batch_alter_table("sandboxes", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_sandboxes_agent_uid"), type_="unique")
        batch_op.drop_column("agent_uid")
