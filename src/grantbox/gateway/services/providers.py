"""Providers: a profile plus where its credentials come from (run time or sealed at rest)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantbox.gateway.catalog import Catalog
from grantbox.gateway.changes import ChangeFeed
from grantbox.gateway.consistency import check_credentials, check_name, refuse_ambiguity
from grantbox.gateway.credentials import CredentialSealer
from grantbox.gateway.errors import AlreadyExists, InUse, NotFound, StaleVersion
from grantbox.gateway.storage import AttachmentRow, ProviderRow, SandboxRow, Store
from grantbox.gateway.timestamps import rfc3339

from .lookup import affected_sandboxes, provider_by_name, sandboxes_with_providers


@dataclass(frozen=True, slots=True)
class ProviderView:
    """A provider as shown to operators: credential names, never values."""

    name: str
    profile_id: str
    runtime_credentials: bool
    credentials: tuple[str, ...]
    attached_to: tuple[str, ...]
    resource_version: int
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.profile_id,
            "runtime_credentials": self.runtime_credentials,
            "credentials": list(self.credentials),
            "attached_to": list(self.attached_to),
            "resource_version": self.resource_version,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        }


def _view(session: Session, row: ProviderRow) -> ProviderView:
    query = (
        select(SandboxRow.name)
        .join(AttachmentRow, AttachmentRow.sandbox_id == SandboxRow.id)
        .where(AttachmentRow.provider_name == row.name)
        .order_by(SandboxRow.name)
    )
    return ProviderView(
        name=row.name,
        profile_id=row.profile_id,
        runtime_credentials=row.runtime_credentials,
        credentials=tuple(json.loads(row.credential_names)),
        attached_to=tuple(session.scalars(query).all()),
        resource_version=row.resource_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class ProviderService:
    def __init__(
        self, store: Store, catalog: Catalog, sealer: CredentialSealer, feed: ChangeFeed
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._sealer = sealer
        self._feed = feed

    def list_all(self) -> list[ProviderView]:
        with self._store.read() as session:
            rows = session.scalars(select(ProviderRow).order_by(ProviderRow.name)).all()
            return [_view(session, row) for row in rows]

    def get(self, name: str) -> ProviderView:
        with self._store.read() as session:
            return _view(session, provider_by_name(session, name))

    def create(
        self,
        name: str,
        profile_id: str,
        runtime_credentials: bool,
        credentials: Mapping[str, str],
    ) -> ProviderView:
        check_name("provider", name)
        now = time.time()
        with self._store.write() as session:
            record = self._catalog.get(session, profile_id)
            if record is None:
                raise NotFound(f"profile '{profile_id}' not found; import it first")
            check_credentials(record.profile, runtime_credentials, credentials)
            if session.get(ProviderRow, name) is not None:
                raise AlreadyExists(f"provider '{name}' already exists")
            row = ProviderRow(
                name=name,
                profile_id=profile_id,
                runtime_credentials=runtime_credentials,
                credential_names=json.dumps(sorted(credentials)),
                sealed_credentials=self._sealer.seal(dict(credentials)) if credentials else None,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            return _view(session, row)

    def update(
        self,
        name: str,
        resource_version: int,
        profile_id: str | None = None,
        runtime_credentials: bool | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> ProviderView:
        """Change type and/or credentials; every sandbox using it is re-checked."""
        with self._store.write() as session:
            row = provider_by_name(session, name)
            if row.resource_version != resource_version:
                raise StaleVersion(
                    f"provider '{name}' is at resource_version {row.resource_version}, "
                    f"not {resource_version}; fetch it again and retry"
                )
            new_profile_id = profile_id or row.profile_id
            record = self._catalog.get(session, new_profile_id)
            if record is None:
                raise NotFound(f"profile '{new_profile_id}' not found")
            if credentials is None and runtime_credentials is None:
                runtime = row.runtime_credentials
                values = self._stored_values(row)
            else:
                runtime = bool(runtime_credentials)
                values = dict(credentials or {})
            check_credentials(record.profile, runtime, values)
            sandboxes = sandboxes_with_providers(session, [name])
            candidates = affected_sandboxes(
                session, self._catalog, sandboxes, {name: new_profile_id}
            )
            refuse_ambiguity("provider update", candidates)
            row.profile_id = new_profile_id
            row.runtime_credentials = runtime
            row.credential_names = json.dumps(sorted(values))
            row.sealed_credentials = self._sealer.seal(values) if values else None
            row.updated_at = time.time()
            session.flush()
            view = _view(session, row)
        self._feed.notify()
        return view

    def delete(self, name: str) -> None:
        with self._store.write() as session:
            row = provider_by_name(session, name)
            view = _view(session, row)
            if view.attached_to:
                raise InUse(
                    f"provider '{name}' is attached to sandbox(es) "
                    f"{', '.join(view.attached_to)}; detach it first"
                )
            session.delete(row)

    def credential_values(self, owners: Iterable[str]) -> dict[str, str]:
        """Stored values for ``provider:credential`` owners (those a sandbox's config binds),
        for its supervisor only. A provider or credential gone meanwhile is left out."""
        wanted: dict[str, set[str]] = {}
        for owner in owners:
            provider, _, credential = owner.partition(":")
            wanted.setdefault(provider, set()).add(credential)
        values: dict[str, str] = {}
        with self._store.read() as session:
            for provider, credentials in sorted(wanted.items()):
                row = session.get(ProviderRow, provider)
                if row is None:
                    continue
                stored = self._stored_values(row)
                for credential in sorted(credentials & stored.keys()):
                    values[f"{provider}:{credential}"] = stored[credential]
        return values

    def _stored_values(self, row: ProviderRow) -> dict[str, str]:
        return self._sealer.open(row.sealed_credentials) if row.sealed_credentials else {}
