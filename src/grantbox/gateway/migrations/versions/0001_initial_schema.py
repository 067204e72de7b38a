"""Initial schema: profiles, providers, sandboxes, attachments, status, logs, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("resource_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profiles")),
    )
    op.create_table(
        "providers",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("profile_id", sa.String(length=63), nullable=False),
        sa.Column("runtime_credentials", sa.Boolean(), nullable=False),
        sa.Column("credential_names", sa.Text(), nullable=False),
        sa.Column("sealed_credentials", sa.Text(), nullable=True),
        sa.Column("resource_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_providers")),
    )
    with op.batch_alter_table("providers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_providers_profile_id"), ["profile_id"], unique=False)

    op.create_table(
        "sandboxes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("resource_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandboxes")),
        sa.UniqueConstraint("name", name=op.f("uq_sandboxes_name")),
    )
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

    op.create_table(
        "sandbox_logs",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sandbox_id", sa.String(length=40), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sandbox_id"],
            ["sandboxes.id"],
            name=op.f("fk_sandbox_logs_sandbox_id_sandboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_sandbox_logs")),
    )
    with op.batch_alter_table("sandbox_logs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sandbox_logs_sandbox_id"), ["sandbox_id"], unique=False
        )

    op.create_table(
        "sandbox_providers",
        sa.Column("sandbox_id", sa.String(length=40), nullable=False),
        sa.Column("provider_name", sa.String(length=63), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_name"],
            ["providers.name"],
            name=op.f("fk_sandbox_providers_provider_name_providers"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["sandbox_id"],
            ["sandboxes.id"],
            name=op.f("fk_sandbox_providers_sandbox_id_sandboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sandbox_id", "provider_name", name=op.f("pk_sandbox_providers")),
    )
    with op.batch_alter_table("sandbox_providers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sandbox_providers_provider_name"), ["provider_name"], unique=False
        )

    op.create_table(
        "sandbox_status",
        sa.Column("sandbox_id", sa.String(length=40), nullable=False),
        sa.Column("deleting", sa.Boolean(), nullable=False),
        sa.Column("driver_state", sa.String(length=16), nullable=False),
        sa.Column("driver_message", sa.Text(), nullable=False),
        sa.Column("last_heartbeat", sa.Float(), nullable=True),
        sa.Column("applied_revision", sa.String(length=80), nullable=False),
        sa.Column("supervisor_error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sandbox_id"],
            ["sandboxes.id"],
            name=op.f("fk_sandbox_status_sandbox_id_sandboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sandbox_id", name=op.f("pk_sandbox_status")),
    )


def downgrade() -> None:
    op.drop_table("sandbox_status")
    with op.batch_alter_table("sandbox_providers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sandbox_providers_provider_name"))

    op.drop_table("sandbox_providers")
    with op.batch_alter_table("sandbox_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sandbox_logs_sandbox_id"))

    op.drop_table("sandbox_logs")
    with op.batch_alter_table("sandbox_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sandbox_events_sandbox_id"))

    op.drop_table("sandbox_events")
    op.drop_table("sandboxes")
    with op.batch_alter_table("providers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_providers_profile_id"))

    op.drop_table("providers")
    op.drop_table("profiles")
