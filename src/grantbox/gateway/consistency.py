"""Write-time rules over plain data: names, provider credentials and grant ambiguity.

These are the decisions behind every refused write; the services only gather the inputs
from the store and apply them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from grantbox.profiles import (
    GrantBinding,
    Profile,
    Severity,
    StaticSet,
    credential_value_problem,
    expand_bindings,
    expand_statics,
    find_collisions,
    validate_profile,
    variable_conflicts,
)

from .errors import AmbiguousGrants, InvalidRequest

NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def check_name(kind: str, name: str) -> None:
    """Provider and sandbox names are DNS labels: they end up in paths, labels and ids."""
    if not NAME.fullmatch(name):
        raise InvalidRequest(
            f"{kind} name {name!r} must be 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )


def check_credentials(
    profile: Profile, runtime_credentials: bool, values: Mapping[str, str]
) -> None:
    """Whether a provider of ``profile`` may be stored with these credentials."""
    if runtime_credentials and values:
        raise InvalidRequest("give either runtime credentials or stored credentials, not both")
    if runtime_credentials:
        if not profile.allows_runtime_credentials:
            static = [c.name for c in profile.credentials if c.required and not c.token_grant]
            needs = f"; it requires stored {', '.join(static)}" if static else ""
            raise InvalidRequest(
                "--runtime-credentials is only valid for profiles whose required credentials "
                f"are all resolved at run time; profile '{profile.id}' is not{needs}"
            )
        return
    if not values and not profile.credentials:
        return  # a network-only profile: nothing to store, nothing to resolve
    if not values:
        raise InvalidRequest(
            f"a provider of profile '{profile.id}' needs credentials: give --credential "
            "NAME=VALUE, or --runtime-credentials for profiles resolved at run time"
        )
    by_name = {c.name: c for c in profile.credentials}
    for key, value in sorted(values.items()):
        credential = by_name.get(key)
        if credential is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise InvalidRequest(
                f"profile '{profile.id}' has no credential '{key}' (known: {known})"
            )
        if credential.token_grant is not None:
            raise InvalidRequest(
                f"credential '{key}' of profile '{profile.id}' is obtained at run time by its "
                "token_grant and cannot be stored"
            )
        problem = credential_value_problem(value)
        if problem is not None:
            raise InvalidRequest(f"credential '{key}' {problem}")
    missing = [
        c.name
        for c in profile.credentials
        if c.required and c.token_grant is None and c.name not in values
    ]
    if missing:
        raise InvalidRequest(
            f"profile '{profile.id}' requires credential(s) {', '.join(missing)}; "
            "give each with --credential NAME=VALUE"
        )


@dataclass(frozen=True, slots=True)
class SandboxAttachments:
    """One sandbox and the ``(provider name, profile)`` pairs it would have after a write."""

    sandbox: str
    attachments: tuple[tuple[str, Profile], ...]


def collision_messages(
    sandbox: str, bindings: Iterable[GrantBinding], statics: StaticSet | None = None
) -> list[str]:
    """Credentials that would both write one header, and stored credentials whose
    placeholders would land in one environment variable, in one sandbox."""
    statics = statics or StaticSet()
    found = [c.message() for c in find_collisions(bindings, statics)]
    found.extend(variable_conflicts(statics))
    return [f"sandbox '{sandbox}': {message}" for message in found]


def ambiguity_messages(candidates: Iterable[SandboxAttachments]) -> list[str]:
    """One message per colliding binding pair (or shared variable), naming the sandbox."""
    messages: list[str] = []
    for candidate in candidates:
        attachments = candidate.attachments
        messages.extend(
            collision_messages(
                candidate.sandbox, expand_bindings(attachments), expand_statics(attachments)
            )
        )
    return messages


def refuse_messages(action: str, messages: Sequence[str]) -> None:
    if messages:
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        raise AmbiguousGrants(
            f"{action} refused: {messages[0]}{more}",
            [{"message": m} for m in messages],
        )


def refuse_ambiguity(action: str, candidates: Sequence[SandboxAttachments]) -> None:
    """Raise :class:`AmbiguousGrants` when the write would make any sandbox ambiguous."""
    refuse_messages(action, ambiguity_messages(candidates))


def refuse_invalid_profiles(action: str, attachments: Iterable[tuple[str, Profile]]) -> None:
    """Re-validate attached profiles: one stored before a rule existed (or a built-in edited
    on disk) must not reach a sandbox. Raises :class:`InvalidRequest` naming provider,
    profile, field path and reason."""
    for provider, profile in attachments:
        for diagnostic in validate_profile(profile):
            if diagnostic.severity is Severity.ERROR:
                raise InvalidRequest(
                    f"{action} refused: provider '{provider}' uses profile '{profile.id}', "
                    f"which is invalid: {diagnostic.field}: {diagnostic.message}; update the "
                    "profile (grantbox profile update)"
                )
