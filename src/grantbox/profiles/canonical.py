"""Canonical serialisation and content hash of a profile.

Two documents that mean the same thing (key order, YAML vs JSON, defaults spelled out or
left implicit, host case) serialise to the same bytes and so hash the same.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .model import Profile

_EXCLUDE = {"resource_version"}


def canonical_data(profile: Profile) -> dict[str, Any]:
    """The profile as plain JSON data with defaults dropped and metadata excluded."""
    data: dict[str, Any] = profile.model_dump(mode="json", exclude_defaults=True, exclude=_EXCLUDE)
    data["id"] = profile.id
    return data


def canonical_json(profile: Profile) -> str:
    return json.dumps(
        canonical_data(profile), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def content_hash(profile: Profile) -> str:
    digest = hashlib.sha256(canonical_json(profile).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"


def export_data(profile: Profile) -> dict[str, Any]:
    """What ``profile export`` prints: the canonical content in the author's field order."""
    data: dict[str, Any] = profile.model_dump(mode="json", exclude_defaults=True)
    data["id"] = profile.id
    ordered = {"id": data.pop("id")}
    ordered.update(data)
    return ordered
