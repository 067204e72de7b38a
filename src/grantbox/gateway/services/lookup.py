"""Store lookups shared by the services: who is attached where, with which profile."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantbox.gateway.catalog import Catalog
from grantbox.gateway.consistency import SandboxAttachments
from grantbox.gateway.errors import NotFound
from grantbox.gateway.storage import AttachmentRow, ProviderRow, SandboxRow
from grantbox.profiles import Profile


def sandbox_by_name(session: Session, name: str) -> SandboxRow:
    row = session.scalars(select(SandboxRow).where(SandboxRow.name == name)).first()
    if row is None:
        raise NotFound(f"sandbox '{name}' not found")
    return row


def provider_by_name(session: Session, name: str) -> ProviderRow:
    row = session.get(ProviderRow, name)
    if row is None:
        raise NotFound(f"provider '{name}' not found")
    return row


def attached_providers(session: Session, sandbox_id: str) -> list[str]:
    query = (
        select(AttachmentRow.provider_name)
        .where(AttachmentRow.sandbox_id == sandbox_id)
        .order_by(AttachmentRow.provider_name)
    )
    return list(session.scalars(query).all())


def sandboxes_with_providers(session: Session, providers: Iterable[str]) -> list[SandboxRow]:
    names = sorted(set(providers))
    if not names:
        return []
    query = (
        select(SandboxRow)
        .join(AttachmentRow, AttachmentRow.sandbox_id == SandboxRow.id)
        .where(AttachmentRow.provider_name.in_(names))
        .distinct()
        .order_by(SandboxRow.name)
    )
    return list(session.scalars(query).all())


def providers_of_profile(session: Session, profile_ids: Iterable[str]) -> list[ProviderRow]:
    ids = sorted(set(profile_ids))
    if not ids:
        return []
    query = select(ProviderRow).where(ProviderRow.profile_id.in_(ids)).order_by(ProviderRow.name)
    return list(session.scalars(query).all())


def resolve_profiles(
    session: Session,
    catalog: Catalog,
    providers: Iterable[str],
    provider_profile: Mapping[str, str] | None = None,
    profile_content: Mapping[str, Profile] | None = None,
) -> tuple[tuple[str, Profile], ...]:
    """``(provider, profile)`` pairs, with candidate profile ids/contents substituted."""
    pairs: list[tuple[str, Profile]] = []
    for name in sorted(set(providers)):
        if provider_profile and name in provider_profile:
            profile_id = provider_profile[name]
        else:
            profile_id = provider_by_name(session, name).profile_id
        if profile_content and profile_id in profile_content:
            pairs.append((name, profile_content[profile_id]))
            continue
        record = catalog.get(session, profile_id)
        if record is None:
            raise NotFound(f"profile '{profile_id}' of provider '{name}' not found")
        pairs.append((name, record.profile))
    return tuple(pairs)


def affected_sandboxes(
    session: Session,
    catalog: Catalog,
    sandboxes: Iterable[SandboxRow],
    provider_profile: Mapping[str, str] | None = None,
    profile_content: Mapping[str, Profile] | None = None,
) -> list[SandboxAttachments]:
    """Each sandbox with the attachments it would have after a candidate change."""
    result = []
    for sandbox in sandboxes:
        providers = attached_providers(session, sandbox.id)
        pairs = resolve_profiles(session, catalog, providers, provider_profile, profile_content)
        result.append(SandboxAttachments(sandbox.name, pairs))
    return result
