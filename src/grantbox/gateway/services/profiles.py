"""Profile import, update, delete, list, export and lint, validated at every write."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from grantbox.gateway.catalog import Catalog, ProfileRecord, record_from_row, stored_document
from grantbox.gateway.changes import ChangeFeed
from grantbox.gateway.consistency import refuse_ambiguity
from grantbox.gateway.errors import (
    AlreadyExists,
    InUse,
    InvalidProfile,
    InvalidRequest,
    NotFound,
    ReadOnly,
    StaleVersion,
)
from grantbox.gateway.storage import ProfileRow, Store
from grantbox.profiles import (
    Diagnostic,
    Profile,
    content_hash,
    has_errors,
    parse_profile,
    validate_profiles,
)

from .lookup import affected_sandboxes, providers_of_profile, sandboxes_with_providers

MAX_DOCUMENTS = 200


def parse_documents(documents: Sequence[Any]) -> tuple[list[Profile], list[Diagnostic]]:
    """Parse and validate a set of profile documents; never raises on bad content."""
    if len(documents) > MAX_DOCUMENTS:
        raise InvalidRequest(f"at most {MAX_DOCUMENTS} profiles per request")
    profiles: list[Profile] = []
    diagnostics: list[Diagnostic] = []
    for index, document in enumerate(documents):
        profile, problems = parse_profile(document, f"documents[{index}]")
        diagnostics.extend(problems)
        if profile is not None:
            profiles.append(profile)
    diagnostics.extend(validate_profiles(profiles))
    diagnostics.sort(key=lambda d: (d.severity != "error", d.profile, d.field))
    return profiles, diagnostics


class ProfileService:
    def __init__(self, store: Store, catalog: Catalog, feed: ChangeFeed) -> None:
        self._store = store
        self._catalog = catalog
        self._feed = feed

    def list_all(self) -> list[ProfileRecord]:
        with self._store.read() as session:
            return self._catalog.all(session)

    def get(self, profile_id: str) -> ProfileRecord:
        with self._store.read() as session:
            record = self._catalog.get(session, profile_id)
        if record is None:
            raise NotFound(f"profile '{profile_id}' not found")
        return record

    def lint(self, documents: Sequence[Any]) -> list[Diagnostic]:
        return parse_documents(documents)[1]

    def import_profiles(self, documents: Sequence[Any]) -> list[ProfileRecord]:
        """Create-only: every document must be new; all are written or none."""
        if not documents:
            raise InvalidRequest("no profile documents given")
        profiles, diagnostics = parse_documents(documents)
        if has_errors(diagnostics):
            raise InvalidProfile.from_diagnostics(diagnostics)
        now = time.time()
        with self._store.write() as session:
            for profile in profiles:
                if profile.id in self._catalog.builtins:
                    raise ReadOnly(f"profile '{profile.id}' is built in and read-only")
                if session.get(ProfileRow, profile.id) is not None:
                    raise AlreadyExists(
                        f"profile '{profile.id}' already exists; use `profile update` with the "
                        "exported resource_version to change it"
                    )
            self._refuse_ambiguity(session, "import", {p.id: p for p in profiles})
            rows = []
            for profile in profiles:
                row = ProfileRow(
                    id=profile.id,
                    document=stored_document(profile),
                    content_hash=content_hash(profile),
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                rows.append(row)
            session.flush()
            records = [record_from_row(row) for row in rows]
        self._feed.notify()
        return records

    def update(self, profile_id: str, document: Any) -> ProfileRecord:
        """Replace a profile; the document must carry the version it was exported at."""
        profiles, diagnostics = parse_documents([document])
        if has_errors(diagnostics):
            raise InvalidProfile.from_diagnostics(diagnostics)
        profile = profiles[0]
        if profile.id != profile_id:
            raise InvalidRequest(
                f"the document's id '{profile.id}' does not match profile '{profile_id}'"
            )
        if profile.resource_version is None:
            raise InvalidRequest(
                "an update needs the resource_version from `grantbox profile export`"
            )
        if profile_id in self._catalog.builtins:
            raise ReadOnly(f"profile '{profile_id}' is built in and read-only")
        with self._store.write() as session:
            row = session.get(ProfileRow, profile_id)
            if row is None:
                raise NotFound(f"profile '{profile_id}' not found")
            if row.resource_version != profile.resource_version:
                raise StaleVersion(
                    f"profile '{profile_id}' is at resource_version {row.resource_version}, "
                    f"not {profile.resource_version}; export it again and reapply your change"
                )
            clean = profile.model_copy(update={"resource_version": None})
            self._refuse_ambiguity(session, "update", {profile_id: clean})
            row.document = stored_document(clean)
            row.content_hash = content_hash(clean)
            row.updated_at = time.time()
            session.flush()
            record = record_from_row(row)
        self._feed.notify()
        return record

    def delete(self, profile_id: str) -> None:
        if profile_id in self._catalog.builtins:
            raise ReadOnly(f"profile '{profile_id}' is built in and read-only")
        with self._store.write() as session:
            row = session.get(ProfileRow, profile_id)
            if row is None:
                raise NotFound(f"profile '{profile_id}' not found")
            users = providers_of_profile(session, [profile_id])
            if users:
                names = ", ".join(p.name for p in users)
                raise InUse(
                    f"profile '{profile_id}' is used by provider(s) {names}; delete them first"
                )
            session.delete(row)

    def _refuse_ambiguity(self, session: Any, action: str, content: dict[str, Profile]) -> None:
        providers = providers_of_profile(session, content)
        sandboxes = sandboxes_with_providers(session, (p.name for p in providers))
        candidates = affected_sandboxes(session, self._catalog, sandboxes, None, content)
        refuse_ambiguity(f"profile {action}", candidates)
