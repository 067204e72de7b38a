"""Profiles with stored credentials, and configs that carry their values and placeholders
the way a supervisor hands them to its proxy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grantbox.profiles import EffectiveConfig, Profile, StaticSecrets
from grantbox.proxy import new_placeholder


def stored_profile(
    profile_id: str,
    endpoints: Sequence[Mapping[str, Any]],
    *,
    name: str = "key",
    auth_style: str | None = None,
    header_name: str = "",
    query_param: str = "",
    env_var: str = "",
    extra: Sequence[Mapping[str, Any]] = (),
) -> Profile:
    """A profile with one stored credential ``name`` (and ``extra`` credentials)."""
    credential: dict[str, Any] = {"name": name, "required": True}
    if auth_style is not None:
        credential["auth_style"] = auth_style
    if header_name:
        credential["header_name"] = header_name
    if query_param:
        credential["query_param"] = query_param
    if env_var:
        credential["env_var"] = env_var
    return Profile.model_validate(
        {
            "id": profile_id,
            "credentials": [credential, *extra],
            "endpoints": list(endpoints),
        }
    )


def with_values(
    config: EffectiveConfig, values: Mapping[str, str]
) -> tuple[EffectiveConfig, dict[str, str]]:
    """``config`` with ``values`` (``provider:credential -> value``) and a fresh placeholder
    for each; returns the config and ``owner -> placeholder``."""
    placeholders = {owner: new_placeholder() for owner in values}
    return config.with_secrets(StaticSecrets(dict(values), placeholders)), placeholders
