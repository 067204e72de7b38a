"""Sandbox conditions (``sandbox_status.conditions``) and truncation as data
(``sandbox_logs.truncated``).

Existing rows read as no conditions and untruncated lines (a line cut before this revision
still carries the supervisor's mark in its text).

Revision ID: 0004_followup
Revises: 0003_sandbox_exit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_followup"
down_revision = "0003_sandbox_exit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandbox_status", schema=None) as batch_op:
        batch_op.add_column(sa.Column("conditions", sa.Text(), nullable=False, server_default="[]"))
    with op.batch_alter_table("sandbox_logs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("truncated", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("sandbox_logs", schema=None) as batch_op:
        batch_op.drop_column("truncated")
    with op.batch_alter_table("sandbox_status", schema=None) as batch_op:
        batch_op.drop_column("conditions")
