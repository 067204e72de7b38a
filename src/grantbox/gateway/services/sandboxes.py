"""Sandboxes: records, attachments, runtime status, logs and events.

Store work is synchronous and runs in worker threads; talking to the compute driver is
asynchronous and happens in :class:`grantbox.gateway.api` handlers through
:class:`SandboxOrchestrator`, after the record is committed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.orm import Session

from grantbox.drivers.protocol import DriverState, DriverStatus
from grantbox.gateway.agent_ids import UidRange, choose_free
from grantbox.gateway.catalog import Catalog
from grantbox.gateway.changes import ChangeFeed
from grantbox.gateway.conditions import Condition, dumps, loads, merge
from grantbox.gateway.consistency import (
    SandboxAttachments,
    check_name,
    collision_messages,
    refuse_ambiguity,
    refuse_invalid_profiles,
    refuse_messages,
)
from grantbox.gateway.errors import (
    AlreadyExists,
    Conflict,
    InvalidRequest,
    NotFound,
    StaleVersion,
    Unavailable,
)
from grantbox.gateway.event_batches import pack
from grantbox.gateway.phase import Phase, SandboxFacts, derive_phase
from grantbox.gateway.shipped_events import (
    MAX_DATA,
    StoredEvent,
    plausible_time,
    stored_event,
)
from grantbox.gateway.storage import (
    AttachmentRow,
    LogRow,
    SandboxRow,
    SandboxStatusRow,
    Store,
    append_batch,
    read_page,
)
from grantbox.gateway.timestamps import rfc3339, rfc3339_or_none
from grantbox.profiles import (
    EffectiveConfig,
    SandboxPolicy,
    Severity,
    build_effective_config,
    validate_policy,
)

from .config import effective_config
from .lookup import attached_providers, resolve_profiles, sandbox_by_name

MAX_COMMAND_ARGS = 256
CREATE_ATTEMPTS = 8
MAX_LOG_LINES_PER_CALL = 1000
MAX_LOG_MESSAGE = MAX_DATA  # a log line's text at most, as an event's
LOG_RETENTION = 10_000
MAX_PAGE = LOG_RETENTION  # one answer never holds more than a sandbox keeps


@dataclass(frozen=True, slots=True)
class SandboxView:
    id: str
    name: str
    phase: Phase
    phase_reason: str
    providers: tuple[str, ...]
    command: tuple[str, ...]
    policy: dict[str, Any]
    revision: str
    applied_revision: str
    last_heartbeat: float | None
    resource_version: int
    created_at: float
    updated_at: float
    exit_code: int | None = None
    agent_uid: int | None = None
    conditions: tuple[Condition, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "phase": self.phase.value,
            "phase_reason": self.phase_reason,
            "exit_code": self.exit_code,
            "providers": list(self.providers),
            "command": list(self.command),
            "policy": self.policy,
            "revision": self.revision,
            "applied_revision": self.applied_revision,
            "last_heartbeat": rfc3339_or_none(self.last_heartbeat),
            "resource_version": self.resource_version,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "agent_uid": self.agent_uid,
            "conditions": [condition.to_dict() for condition in self.conditions],
        }


@dataclass(frozen=True, slots=True)
class RecordPage:
    """Log lines or events in sequence order, and how many older ones a tail left out."""

    items: list[dict[str, Any]]
    omitted: int = 0

    @property
    def last_seq(self) -> int:
        return int(self.items[-1]["seq"]) if self.items else 0


def parse_policy(data: Mapping[str, Any] | None) -> SandboxPolicy | None:
    if not data:
        return None
    try:
        policy = SandboxPolicy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"policy {where}: {first['msg']}") from None
    problems = [d for d in validate_policy(policy) if d.severity is Severity.ERROR]
    if problems:
        detail = "; ".join(f"{d.field}: {d.message}" for d in problems[:5])
        raise InvalidRequest(f"policy is invalid: {detail}")
    return policy


def _keep_newest_logs(session: Session, sandbox_id: str, keep: int) -> None:
    """Delete all but the newest ``keep`` lines of one sandbox's logs."""
    cutoff = session.scalar(
        select(LogRow.seq)
        .where(LogRow.sandbox_id == sandbox_id)
        .order_by(LogRow.seq.desc())
        .offset(keep)
        .limit(1)
    )
    if cutoff is not None:
        session.execute(delete(LogRow).where(LogRow.sandbox_id == sandbox_id, LogRow.seq <= cutoff))


class SandboxService:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        feed: ChangeFeed,
        stale_after: float,
        agent_uids: UidRange | None = None,
        records: ChangeFeed | None = None,
    ) -> None:
        self._store = store
        self._agent_uids = agent_uids or UidRange()
        self._catalog = catalog
        self._feed = feed
        self._stale_after = stale_after
        self.log_retention = LOG_RETENTION
        # Wakes ``logs -f``/``events -f`` streams when new lines or events are stored.
        self.records = records or ChangeFeed()

    # -- reading --------------------------------------------------------------------------

    def _view(self, session: Session, row: SandboxRow) -> SandboxView:
        status = session.get(SandboxStatusRow, row.id)
        facts = SandboxFacts(
            deleting=bool(status and status.deleting),
            driver_state=DriverState(status.driver_state) if status else DriverState.UNKNOWN,
            driver_message=status.driver_message if status else "",
            last_heartbeat=status.last_heartbeat if status else None,
            supervisor_error=status.supervisor_error if status else "",
            exit_code=status.exit_code if status else None,
            exit_reason=status.exit_reason if status else "",
        )
        phase, reason = derive_phase(facts, time.time(), self._stale_after)
        try:
            revision = effective_config(session, self._catalog, row).revision
        except NotFound as exc:  # e.g. a provider whose profile vanished in a replica race
            revision = ""
            if phase is not Phase.DELETING:
                phase, reason = Phase.ERROR, f"configuration incomplete: {exc.message}"
        return SandboxView(
            id=row.id,
            name=row.name,
            phase=phase,
            phase_reason=reason,
            providers=tuple(attached_providers(session, row.id)),
            command=tuple(json.loads(row.command)),
            policy=json.loads(row.policy) or {},
            revision=revision,
            applied_revision=status.applied_revision if status else "",
            last_heartbeat=facts.last_heartbeat,
            resource_version=row.resource_version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            exit_code=facts.exit_code,
            agent_uid=row.agent_uid,
            conditions=loads(status.conditions) if status else (),
        )

    def list_all(self) -> list[SandboxView]:
        with self._store.read() as session:
            rows = session.scalars(select(SandboxRow).order_by(SandboxRow.name)).all()
            return [self._view(session, row) for row in rows]

    def count_by_phase(self) -> dict[str, int]:
        counts = {phase.value: 0 for phase in Phase}
        for view in self.list_all():
            counts[view.phase.value] += 1
        return counts

    def live_ids(self) -> list[str]:
        """Ids of the sandboxes that should run: every record not being deleted."""
        with self._store.read() as session:
            deleting = select(SandboxStatusRow.sandbox_id).where(SandboxStatusRow.deleting)
            query = select(SandboxRow.id).where(SandboxRow.id.not_in(deleting))
            return list(session.scalars(query).all())

    def get(self, name: str) -> SandboxView:
        with self._store.read() as session:
            return self._view(session, sandbox_by_name(session, name))

    def get_by_id(self, sandbox_id: str) -> SandboxView:
        with self._store.read() as session:
            row = session.get(SandboxRow, sandbox_id)
            if row is None:
                raise NotFound(f"sandbox {sandbox_id} not found")
            return self._view(session, row)

    def config(self, sandbox_id: str) -> EffectiveConfig:
        with self._store.read() as session:
            row = session.get(SandboxRow, sandbox_id)
            status = session.get(SandboxStatusRow, sandbox_id)
            if row is None or (status is not None and status.deleting):
                raise NotFound("sandbox not found or being deleted")
            config = effective_config(session, self._catalog, row)
            name = row.name
        # Writes refuse ambiguity, but a race between replicas or a changed built-in profile
        # could still leave an ambiguous set stored: never hand that to a supervisor.
        refuse_messages("config", collision_messages(name, config.bindings, config.statics))
        return config

    def config_by_name(self, name: str) -> EffectiveConfig:
        with self._store.read() as session:
            return effective_config(session, self._catalog, sandbox_by_name(session, name))

    # -- writing --------------------------------------------------------------------------

    def create(
        self,
        name: str,
        providers: Sequence[str],
        policy: Mapping[str, Any] | None,
        command: Sequence[str],
    ) -> SandboxView:
        """Record a sandbox with a uid of its own; a replica racing for the same uid (the
        unique column refuses one of them) makes the loser pick again, spread out."""
        for attempt in range(CREATE_ATTEMPTS - 1):
            try:
                return self._create(name, providers, policy, command, attempt)
            except Conflict:
                continue
        return self._create(name, providers, policy, command, CREATE_ATTEMPTS - 1)

    def _create(
        self,
        name: str,
        providers: Sequence[str],
        policy: Mapping[str, Any] | None,
        command: Sequence[str],
        attempt: int,
    ) -> SandboxView:
        check_name("sandbox", name)
        if len(command) > MAX_COMMAND_ARGS:
            raise InvalidRequest(f"a command may have at most {MAX_COMMAND_ARGS} arguments")
        if len(set(providers)) != len(providers):
            raise InvalidRequest("a provider may be attached only once")
        parsed = parse_policy(policy)
        sandbox_id = uuid.uuid4().hex
        now = time.time()
        with self._store.write() as session:
            exists = session.scalars(select(SandboxRow.id).where(SandboxRow.name == name)).first()
            if exists is not None:
                raise AlreadyExists(f"sandbox '{name}' already exists")
            pairs = resolve_profiles(session, self._catalog, providers)
            refuse_invalid_profiles("sandbox create", pairs)
            try:
                build_effective_config(sandbox_id, parsed, pairs)
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
            refuse_ambiguity("sandbox create", [SandboxAttachments(name, pairs)])
            taken = session.scalars(
                select(SandboxRow.agent_uid).where(SandboxRow.agent_uid.is_not(None))
            ).all()
            in_use = (uid for uid in taken if uid is not None)
            agent_uid = choose_free(self._agent_uids, in_use, attempt)
            if agent_uid is None:
                raise Unavailable(
                    f"every agent uid of {self._agent_uids.first}-{self._agent_uids.last} is "
                    "in use; delete a sandbox or give the gateway a larger --agent-uids range"
                )
            row = SandboxRow(
                id=sandbox_id,
                name=name,
                policy=parsed.canonical_json() if parsed else "{}",
                command=json.dumps(list(command)),
                created_at=now,
                updated_at=now,
                agent_uid=agent_uid,
            )
            session.add(row)
            session.flush()
            for provider in providers:
                session.add(AttachmentRow(sandbox_id=sandbox_id, provider_name=provider))
            session.add(
                SandboxStatusRow(
                    sandbox_id=sandbox_id,
                    deleting=False,
                    driver_state=DriverState.PENDING.value,
                    driver_message="",
                    applied_revision="",
                    supervisor_error="",
                )
            )
            session.flush()
            return self._view(session, row)

    def attach(self, name: str, provider: str, resource_version: int | None) -> SandboxView:
        with self._store.write() as session:
            row = self._for_change(session, name, resource_version)
            current = attached_providers(session, row.id)
            if provider in current:
                raise AlreadyExists(f"provider '{provider}' is already attached to '{name}'")
            pairs = resolve_profiles(session, self._catalog, [*current, provider])
            refuse_invalid_profiles("attach", pairs)
            refuse_ambiguity("attach", [SandboxAttachments(name, pairs)])
            session.add(AttachmentRow(sandbox_id=row.id, provider_name=provider))
            row.updated_at = time.time()
            session.flush()
            view = self._view(session, row)
        self._feed.notify()
        return view

    def detach(self, name: str, provider: str, resource_version: int | None) -> SandboxView:
        with self._store.write() as session:
            row = self._for_change(session, name, resource_version)
            link = session.get(AttachmentRow, (row.id, provider))
            if link is None:
                raise NotFound(f"provider '{provider}' is not attached to sandbox '{name}'")
            session.delete(link)
            row.updated_at = time.time()
            session.flush()
            view = self._view(session, row)
        self._feed.notify()
        return view

    def _for_change(self, session: Session, name: str, resource_version: int | None) -> SandboxRow:
        row = sandbox_by_name(session, name)
        if resource_version is not None and row.resource_version != resource_version:
            raise StaleVersion(
                f"sandbox '{name}' is at resource_version {row.resource_version}, "
                f"not {resource_version}; fetch it again and retry"
            )
        status = session.get(SandboxStatusRow, row.id)
        if status is not None and status.deleting:
            raise NotFound(f"sandbox '{name}' is being deleted")
        return row

    def mark_deleting(self, name: str) -> str:
        with self._store.write() as session:
            row = sandbox_by_name(session, name)
            status = session.get(SandboxStatusRow, row.id)
            if status is None:
                status = SandboxStatusRow(sandbox_id=row.id, driver_state=DriverState.UNKNOWN.value)
                session.add(status)
            status.deleting = True
            sandbox_id = row.id
        self._feed.notify()
        return sandbox_id

    def remove(self, sandbox_id: str) -> None:
        with self._store.write() as session:
            row = session.get(SandboxRow, sandbox_id)
            if row is not None:
                session.delete(row)

    def record_driver_status(self, sandbox_id: str, status: DriverStatus) -> None:
        with self._store.write() as session:
            row = session.get(SandboxStatusRow, sandbox_id)
            if row is None:
                return
            row.driver_state = status.state.value
            row.driver_message = status.message[:2000]

    def heartbeat(
        self,
        sandbox_id: str,
        applied_revision: str,
        error: str,
        conditions: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Record a heartbeat; ``conditions`` replace the last report (see
        :mod:`grantbox.gateway.conditions`), keeping ``since`` of unchanged ones."""
        with self._store.write() as session:
            row = session.get(SandboxStatusRow, sandbox_id)
            if row is None or row.deleting:
                raise NotFound("sandbox not found or being deleted")
            now = time.time()
            row.last_heartbeat = now
            row.applied_revision = applied_revision[:80]
            row.supervisor_error = error[:2000]
            row.conditions = dumps(merge(loads(row.conditions), conditions, now))

    def record_exit(self, sandbox_id: str, exit_code: int, reason: str) -> None:
        """The supervisor says the sandbox's command ended (before it exits itself)."""
        with self._store.write() as session:
            row = session.get(SandboxStatusRow, sandbox_id)
            if row is None or row.deleting:
                raise NotFound("sandbox not found or being deleted")
            row.exit_code = exit_code
            row.exit_reason = reason[:2000]

    def restarting(self, name: str) -> SandboxView:
        """Forget the last run's runtime facts before the driver starts the sandbox again."""
        with self._store.write() as session:
            row = self._for_change(session, name, None)
            status = session.get(SandboxStatusRow, row.id)
            if status is None:
                status = SandboxStatusRow(sandbox_id=row.id)
                session.add(status)
            status.driver_state = DriverState.PENDING.value
            status.driver_message = "restarting"
            status.last_heartbeat = None
            status.applied_revision = ""
            status.supervisor_error = ""
            status.exit_code = None
            status.exit_reason = ""
            status.conditions = "[]"
            session.flush()
            return self._view(session, row)

    def to_resume(self) -> list[SandboxView]:
        """Sandboxes a restarted single-host control plane should start again: all that are
        not being deleted and whose command had not ended."""
        return [v for v in self.list_all() if v.phase is not Phase.DELETING and v.exit_code is None]

    def deleting_ids(self) -> list[str]:
        with self._store.read() as session:
            query = select(SandboxStatusRow.sandbox_id).where(SandboxStatusRow.deleting)
            return list(session.scalars(query).all())

    # -- logs and events ------------------------------------------------------------------

    def append_logs(self, sandbox_id: str, lines: Sequence[Mapping[str, Any]]) -> int:
        if len(lines) > MAX_LOG_LINES_PER_CALL:
            raise InvalidRequest(f"at most {MAX_LOG_LINES_PER_CALL} log lines per call")
        now = time.time()
        with self._store.write() as session:
            if session.get(SandboxRow, sandbox_id) is None:
                raise NotFound("sandbox not found")
            rows = []
            for line in lines:
                message = str(line.get("message", ""))
                rows.append(
                    {
                        "sandbox_id": sandbox_id,
                        "ts": plausible_time(line.get("ts"), now),
                        "stream": str(line.get("stream") or "supervisor")[:32],
                        "message": message[:MAX_LOG_MESSAGE],
                        "truncated": bool(line.get("truncated")) or len(message) > MAX_LOG_MESSAGE,
                    }
                )
            if rows:
                # Core INSERT as one executemany: no unit-of-work bookkeeping per line.
                session.connection().execute(insert(cast(Table, LogRow.__table__)), rows)
            _keep_newest_logs(session, sandbox_id, self.log_retention)
        self.records.notify()
        return len(lines)

    def append_events(self, sandbox_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        """Store events given as mappings (each encoded once); see :meth:`append_shipped`."""
        now = time.time()
        return self.append_shipped(sandbox_id, [stored_event(item, now) for item in events])

    def append_shipped(self, sandbox_id: str, events: Sequence[StoredEvent]) -> int:
        """Store a batch of events as read from a supervisor's shipment (their text as
        sent) as one row, and trim the sandbox's events to its retention."""
        if len(events) > MAX_LOG_LINES_PER_CALL:
            raise InvalidRequest(f"at most {MAX_LOG_LINES_PER_CALL} events per call")
        with self._store.write() as session:
            # Locked (on PostgreSQL) so that two replicas cannot number events alike.
            if session.get(SandboxRow, sandbox_id, with_for_update=True) is None:
                raise NotFound("sandbox not found")
            if events:
                # Every proxied request yields events: keep them bounded like the logs.
                append_batch(session, sandbox_id, pack(events), self.log_retention)
        self.records.notify()
        return len(events)

    def id_of(self, name: str) -> str:
        with self._store.read() as session:
            return sandbox_by_name(session, name).id

    def _log_rows(
        self,
        sandbox_id: str,
        *,
        after: int,
        since: float | None,
        tail: int | None,
        limit: int,
    ) -> tuple[list[Any], int]:
        """Log lines after ``after`` (and at or after ``since``): with ``tail``, the newest
        ``tail`` of them and how many older ones were left out; else the oldest ``limit``."""
        with self._store.read() as session:
            if session.get(SandboxRow, sandbox_id) is None:
                raise NotFound("sandbox not found")
            where = [LogRow.sandbox_id == sandbox_id, LogRow.seq > after]
            if since is not None:
                where.append(LogRow.ts >= since)
            if tail is None:
                query = select(LogRow).where(*where).order_by(LogRow.seq).limit(limit)
                return list(session.scalars(query).all()), 0
            newest = select(LogRow).where(*where).order_by(LogRow.seq.desc()).limit(tail)
            rows = list(reversed(session.scalars(newest).all()))
            total = session.scalar(select(func.count()).select_from(LogRow).where(*where)) or 0
            return rows, max(0, total - len(rows))

    def log_page(
        self,
        sandbox_id: str,
        *,
        after: int = 0,
        since: float | None = None,
        tail: int | None = None,
        limit: int = MAX_PAGE,
    ) -> RecordPage:
        rows, omitted = self._log_rows(sandbox_id, after=after, since=since, tail=tail, limit=limit)
        items = [
            {
                "seq": r.seq,
                "time": rfc3339(r.ts),
                "stream": r.stream,
                "message": r.message,
                "truncated": r.truncated,
            }
            for r in rows
        ]
        return RecordPage(items, omitted)

    def event_page(
        self,
        sandbox_id: str,
        *,
        after: int = 0,
        since: float | None = None,
        tail: int | None = None,
        limit: int = MAX_PAGE,
    ) -> RecordPage:
        with self._store.read() as session:
            if session.get(SandboxRow, sandbox_id) is None:
                raise NotFound("sandbox not found")
            chosen, omitted = read_page(
                session, sandbox_id, after=after, since=since, tail=tail, limit=limit
            )
        items = [
            {"seq": s.seq, "time": rfc3339(s.ts), "kind": s.kind, "data": json.loads(text)}
            for s, text in chosen
        ]
        return RecordPage(items, omitted)
