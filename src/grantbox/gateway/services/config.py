"""A sandbox's effective config, computed from the store with the profiles package."""

from __future__ import annotations

import json

from sqlalchemy.orm import Session

from grantbox.gateway.catalog import Catalog
from grantbox.gateway.storage import SandboxRow
from grantbox.profiles import EffectiveConfig, SandboxPolicy, build_effective_config

from .lookup import attached_providers, provider_by_name, resolve_profiles


def sandbox_policy(row: SandboxRow) -> SandboxPolicy | None:
    data = json.loads(row.policy)
    return SandboxPolicy.model_validate(data) if data else None


def effective_config(session: Session, catalog: Catalog, row: SandboxRow) -> EffectiveConfig:
    providers = attached_providers(session, row.id)
    pairs = resolve_profiles(session, catalog, providers)
    # A stored credential's update moves the revision (by the provider's version, never
    # by its value), so supervisors fetch the new value.
    versions = {name: provider_by_name(session, name).resource_version for name in providers}
    return build_effective_config(
        row.id, sandbox_policy(row), pairs, agent_uid=row.agent_uid, credential_versions=versions
    )
