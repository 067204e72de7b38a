"""Tables of the gateway's store. Operator-owned records carry ``resource_version``.

``resource_version`` is SQLAlchemy's version counter: every UPDATE is issued as
``... WHERE resource_version = <read value>``, so two writers that read the same version
cannot both win, on SQLite or PostgreSQL alike.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ProfileRow(Base):
    __tablename__ = "profiles"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    document: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(80))
    resource_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __mapper_args__ = {"version_id_col": resource_version}  # noqa: RUF012


class ProviderRow(Base):
    __tablename__ = "providers"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(63), index=True)
    runtime_credentials: Mapped[bool] = mapped_column(Boolean)
    credential_names: Mapped[str] = mapped_column(Text)
    sealed_credentials: Mapped[str | None] = mapped_column(Text, nullable=True)
    resource_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __mapper_args__ = {"version_id_col": resource_version}  # noqa: RUF012


class SandboxRow(Base):
    __tablename__ = "sandboxes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    policy: Mapped[str] = mapped_column(Text)
    command: Mapped[str] = mapped_column(Text)
    resource_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # The agent's kernel uid/gid (see grantbox.gateway.agent_ids); unique among live rows.
    agent_uid: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)

    __mapper_args__ = {"version_id_col": resource_version}  # noqa: RUF012


class AttachmentRow(Base):
    """A provider attached to a sandbox. Deleting an attached provider is refused."""

    __tablename__ = "sandbox_providers"

    sandbox_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("sandboxes.id", ondelete="CASCADE"), primary_key=True
    )
    provider_name: Mapped[str] = mapped_column(
        String(63), ForeignKey("providers.name", ondelete="RESTRICT"), primary_key=True, index=True
    )


class SandboxStatusRow(Base):
    """Runtime facts reported by the driver and the supervisor (system-owned, last write wins)."""

    __tablename__ = "sandbox_status"

    sandbox_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("sandboxes.id", ondelete="CASCADE"), primary_key=True
    )
    deleting: Mapped[bool] = mapped_column(Boolean, default=False)
    driver_state: Mapped[str] = mapped_column(String(16))
    driver_message: Mapped[str] = mapped_column(Text, default="")
    last_heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    applied_revision: Mapped[str] = mapped_column(String(80), default="")
    supervisor_error: Mapped[str] = mapped_column(Text, default="")
    # How the sandbox's command ended, as its supervisor reported it (None while it runs).
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    exit_reason: Mapped[str] = mapped_column(Text, default="")
    # The supervisor's last reported conditions (grantbox.gateway.conditions), as JSON.
    conditions: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")


class LogRow(Base):
    __tablename__ = "sandbox_logs"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("sandboxes.id", ondelete="CASCADE"), index=True
    )
    ts: Mapped[float] = mapped_column(Float)
    stream: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    # The message was cut (by the supervisor or the gateway) to fit its bound.
    truncated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class EventBatchRow(Base):
    """A shipped batch of one sandbox's events (:mod:`grantbox.gateway.event_batches`)."""

    __tablename__ = "sandbox_event_batches"
    __table_args__ = (UniqueConstraint("sandbox_id", "first_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("sandboxes.id", ondelete="CASCADE")
    )
    # The first event's number within its sandbox; the i-th event is first_seq + i.
    first_seq: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(Integer)
    # Events at the front hidden by retention.
    skip: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ts_min: Mapped[float] = mapped_column(Float)
    ts_max: Mapped[float] = mapped_column(Float)
    times: Mapped[str] = mapped_column(Text)  # JSON array of epoch seconds
    kinds: Mapped[str] = mapped_column(Text)  # JSON array of strings


class EventTextRow(Base):
    """A batch's events as sent (a JSON array), apart from the batch's row: retention
    updates that row's ``skip``, and SQLite rewrites a whole row on every update."""

    __tablename__ = "sandbox_event_texts"

    batch_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("sandbox_event_batches.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[str] = mapped_column(Text)
