"""How a sandbox's command ended: exit status and cause, reported by its supervisor.

Revision ID: 0003_sandbox_exit
Revises: 0002_fence
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_sandbox_exit"
down_revision = "0002_fence"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandbox_status") as batch:
        batch.add_column(sa.Column("exit_code", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("exit_reason", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("sandbox_status") as batch:
        batch.drop_column("exit_reason")
        batch.drop_column("exit_code")
