"""The profile catalog: built-in profiles shipped with grantbox plus those operators import.

Built-in profiles are read-only and validated with the same rules as imported ones when the
gateway starts; an invalid built-in stops the gateway rather than being skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantbox.profiles import (
    Profile,
    ProfileError,
    content_hash,
    export_data,
    has_errors,
    load_paths,
    validate_profiles,
)

from .storage import ProfileRow

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """A profile as the gateway holds it: content plus version and origin."""

    profile: Profile
    resource_version: int
    builtin: bool
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def id(self) -> str:
        return self.profile.id

    def export(self) -> dict[str, Any]:
        """The document ``profile export`` prints and ``profile update`` takes back."""
        data = export_data(self.profile.model_copy(update={"resource_version": None}))
        data["resource_version"] = self.resource_version
        return data

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "display_name": self.profile.display_name,
            "category": self.profile.category,
            "builtin": self.builtin,
            "credentials": [c.name for c in self.profile.credentials],
            "runtime_credentials": self.profile.allows_runtime_credentials,
            "resource_version": self.resource_version,
            "content_hash": content_hash(self.profile),
        }


def stored_document(profile: Profile) -> str:
    """What goes into the ``profiles.document`` column (no resource version)."""
    data = export_data(profile.model_copy(update={"resource_version": None}))
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


def record_from_row(row: ProfileRow) -> ProfileRecord:
    profile = Profile.model_validate(json.loads(row.document))
    return ProfileRecord(profile, row.resource_version, False, row.created_at, row.updated_at)


def load_builtins(directory: Path | None = None) -> dict[str, ProfileRecord]:
    """Load and validate built-in profiles; raises :class:`ProfileError` on any error."""
    source = directory or BUILTIN_DIR
    if not source.is_dir():
        return {}
    files = sorted(p for p in source.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    if not files:
        return {}
    result = load_paths(files)
    diagnostics = list(result.diagnostics)
    diagnostics.extend(validate_profiles(p.profile for p in result.profiles))
    if has_errors(diagnostics):
        raise ProfileError(diagnostics)
    return {p.profile.id: ProfileRecord(p.profile, 1, True) for p in result.profiles}


class Catalog:
    """Looks profiles up by id: built-ins first, then the store."""

    def __init__(self, builtins: dict[str, ProfileRecord]) -> None:
        self.builtins = builtins

    def get(self, session: Session, profile_id: str) -> ProfileRecord | None:
        if profile_id in self.builtins:
            return self.builtins[profile_id]
        row = session.get(ProfileRow, profile_id)
        return record_from_row(row) if row is not None else None

    def all(self, session: Session) -> list[ProfileRecord]:
        rows = session.scalars(select(ProfileRow).order_by(ProfileRow.id)).all()
        stored = [record_from_row(row) for row in rows]
        return sorted([*self.builtins.values(), *stored], key=lambda r: r.id)
