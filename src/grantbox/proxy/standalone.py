"""The standalone proxy's config file: the inputs the gateway would otherwise send.

    sandbox_id: my-workload            # optional; shown in events
    profiles:                          # provider profiles: file paths or inline documents
      - ./alpha-profile.yaml           #   (relative to this file; YAML may hold several)
      - id: beta
        credentials: [...]
        endpoints: [...]
    providers:                         # the providers "attached": a name and a profile id
      - {name: alpha, profile: alpha}
    policy:                            # extra network policy (a sandbox --policy document)
      network:
        - name: package-mirror
          endpoints: [{host: pypi.org, port: 443}]

Everything is validated the way the gateway validates it (profile lint rules, binding
ambiguity, policy endpoint rules); any problem is reported with where it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from grantbox.profiles import (
    EffectiveConfig,
    Profile,
    SandboxPolicy,
    build_effective_config,
    find_collisions,
    load_paths,
    parse_profile,
    validate_profiles,
)

TOP_LEVEL_KEYS = frozenset({"sandbox_id", "profiles", "providers", "policy"})


class StandaloneConfigError(ValueError):
    """The config file cannot be used; ``problems`` says every reason found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    return yaml.safe_load(text)


def _profiles(items: Any, base: Path, problems: list[str]) -> dict[str, Profile]:
    if not isinstance(items, list):
        problems.append("profiles: expected a list of file paths or profile documents")
        return {}
    found: list[Profile] = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            path = (base / item) if not Path(item).is_absolute() else Path(item)
            result = load_paths([path])
            problems.extend(
                f"profiles[{index}] ({path}): {d}"
                for d in result.diagnostics
                if d.severity == "error"
            )
            found.extend(loaded.profile for loaded in result.profiles)
        elif isinstance(item, Mapping):
            profile, diagnostics = parse_profile(dict(item), f"profiles[{index}]")
            problems.extend(f"profiles[{index}]: {d}" for d in diagnostics if d.severity == "error")
            if profile is not None:
                found.append(profile)
        else:
            problems.append(f"profiles[{index}]: expected a path or a profile document")
    problems.extend(str(d) for d in validate_profiles(found) if d.severity == "error")
    by_id: dict[str, Profile] = {}
    for profile in found:
        if profile.id in by_id:
            problems.append(f"profiles: id '{profile.id}' is defined more than once")
        by_id[profile.id] = profile
    return by_id


def _providers(
    items: Any, profiles: Mapping[str, Profile], problems: list[str]
) -> list[tuple[str, Profile]]:
    if items is None:
        return []
    if not isinstance(items, list):
        problems.append("providers: expected a list of {name, profile}")
        return []
    out: list[tuple[str, Profile]] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or set(item) != {"name", "profile"}:
            problems.append(f"providers[{index}]: expected exactly the keys name and profile")
            continue
        name, profile_id = str(item["name"]), str(item["profile"])
        if name in seen:
            problems.append(f"providers[{index}]: provider name '{name}' is used twice")
        seen.add(name)
        if profile_id not in profiles:
            problems.append(f"providers[{index}]: no profile with id '{profile_id}'")
            continue
        profile = profiles[profile_id]
        stored = [c.name for _, c in profile.static_credentials if c.required]
        if stored:
            problems.append(
                f"providers[{index}]: profile '{profile_id}' requires stored credential(s) "
                f"{', '.join(stored)}, which only a gateway can hold; run it under a gateway"
            )
        out.append((name, profile))
    return out


def _policy(data: Any, problems: list[str]) -> SandboxPolicy:
    try:
        policy = SandboxPolicy.model_validate(data or {})
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            problems.append(f"policy.{where}: {error['msg']}")
        return SandboxPolicy()
    # Policy endpoints follow the same endpoint rules as profile endpoints; the rules are
    # run on a stand-in profile holding just the entry's endpoints.
    for entry in policy.network:
        holder = Profile(id="policy-entry", endpoints=entry.endpoints)
        for diagnostic in validate_profiles([holder]):
            if diagnostic.severity == "error" and diagnostic.field.startswith("endpoints"):
                problems.append(
                    f"policy.network[{entry.name}].{diagnostic.field}: {diagnostic.message}"
                )
    return policy


def parse_standalone_config(data: Any, base: Path, source: str = "<config>") -> EffectiveConfig:
    """Validate a parsed config document and build the effective config it describes."""
    if not isinstance(data, Mapping):
        raise StandaloneConfigError(source, ["expected a mapping at the top level"])
    problems: list[str] = []
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        problems.append(
            f"unknown keys: {', '.join(unknown)} (allowed: {', '.join(sorted(TOP_LEVEL_KEYS))})"
        )
    profiles = _profiles(data.get("profiles", []), base, problems)
    attachments = _providers(data.get("providers"), profiles, problems)
    policy = _policy(data.get("policy"), problems)
    if problems:
        raise StandaloneConfigError(source, problems)
    try:
        config = build_effective_config(
            str(data.get("sandbox_id") or "standalone"), policy, attachments
        )
    except ValueError as exc:
        raise StandaloneConfigError(source, [str(exc)]) from exc
    collisions = find_collisions(config.bindings, config.statics)
    if collisions:
        raise StandaloneConfigError(source, [c.message() for c in collisions])
    return config


def load_standalone_config(path: Path) -> EffectiveConfig:
    """Read, validate and build the effective config from a YAML or JSON file."""
    try:
        data = _read(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise StandaloneConfigError(str(path), [f"cannot read: {exc}"]) from exc
    return parse_standalone_config(data, path.parent, str(path))
