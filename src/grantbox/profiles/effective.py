"""Sandbox network policy and the effective config a supervisor enforces.

The effective config is what the gateway computes for one sandbox and what the standalone
proxy computes from its config file: the sandbox's own policy entries plus one
``_provider_<name>`` entry per attached provider's profile endpoints, the grant bindings,
and a revision that changes exactly when any input changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict

from .bindings import BindingSet, expand_bindings
from .canonical import content_hash
from .isolation import FilesystemPolicy, LimitsPolicy
from .model import Endpoint, Profile
from .static import StaticSecrets, StaticSet, expand_statics

PROVIDER_ENTRY_PREFIX = "_provider_"


class PolicyEntry(BaseModel):
    """A named group of endpoints the sandbox may reach."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    binaries: tuple[str, ...] = ()


class SandboxPolicy(BaseModel):
    """The ``--policy FILE`` document: ``network: [{name, endpoints: [...]}, ...]``, and
    the agent's ``filesystem`` view and ``limits``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: tuple[PolicyEntry, ...] = ()
    filesystem: FilesystemPolicy = FilesystemPolicy()
    limits: LimitsPolicy = LimitsPolicy()

    def canonical_json(self) -> str:
        data = self.model_dump(mode="json", exclude_defaults=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class EffectiveConfig:
    """Everything a supervisor's proxy enforces for one sandbox."""

    sandbox_id: str
    revision: str
    policy: SandboxPolicy
    bindings: BindingSet
    # The kernel uid/gid the gateway reserved for this sandbox's agent (None: the
    # supervisor's own choice, e.g. for the standalone proxy).
    agent_uid: int | None = None
    # Where each stored credential may go (plain data, published like the bindings)...
    statics: StaticSet = field(default_factory=StaticSet)
    # ...and the values with their placeholders: set by the supervisor only, never in
    # to_dict, a repr or a comparison.
    secrets: StaticSecrets = field(default_factory=StaticSecrets, repr=False, compare=False)

    def endpoints(self) -> Iterable[tuple[str, Endpoint]]:
        """Every ``(entry name, endpoint)`` pair, sandbox entries first."""
        for entry in self.policy.network:
            for endpoint in entry.endpoints:
                yield entry.name, endpoint

    def to_dict(self) -> dict[str, Any]:
        return {
            "sandbox_id": self.sandbox_id,
            "revision": self.revision,
            "policy": self.policy.model_dump(mode="json", exclude_defaults=True),
            "bindings": self.bindings.to_list(),
            "bindings_hash": self.bindings.content_hash,
            "static_bindings": self.statics.to_list(),
            "agent_uid": self.agent_uid,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EffectiveConfig:
        return cls(
            sandbox_id=str(data.get("sandbox_id", "")),
            revision=str(data["revision"]),
            policy=SandboxPolicy.model_validate(data.get("policy", {})),
            bindings=BindingSet.from_list(data.get("bindings", ()), data.get("bindings_hash", "")),
            agent_uid=_optional_uid(data.get("agent_uid")),
            statics=StaticSet.from_list(data.get("static_bindings", ())),
        )

    def with_secrets(self, secrets: StaticSecrets) -> EffectiveConfig:
        return replace(self, secrets=secrets)


def _optional_uid(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**32 - 1:
        raise ValueError(f"agent_uid {value!r} is not a uid")
    return value


def provider_entry_name(provider: str) -> str:
    return f"{PROVIDER_ENTRY_PREFIX}{provider}"


def build_effective_config(
    sandbox_id: str,
    policy: SandboxPolicy | None,
    attachments: Iterable[tuple[str, Profile]],
    *,
    agent_uid: int | None = None,
    credential_versions: Mapping[str, int] | None = None,
) -> EffectiveConfig:
    """Combine a sandbox policy and attached ``(provider name, profile)`` pairs.

    The revision hashes the sandbox policy, each provider name and the full content hash of
    its profile (built-in profiles included), and ``credential_versions`` (provider name ->
    the version of its stored credentials), so it moves exactly when an input moves - a
    stored value updated included, without the value itself being hashed.
    """
    pairs = sorted(attachments, key=lambda pair: pair[0])
    base = policy or SandboxPolicy()
    reserved = [e.name for e in base.network if e.name.startswith(PROVIDER_ENTRY_PREFIX)]
    if reserved:
        raise ValueError(
            f"policy entry names starting with '{PROVIDER_ENTRY_PREFIX}' are reserved for "
            f"attached providers: {', '.join(reserved)}"
        )
    entries = list(base.network)
    for provider, profile in pairs:
        entries.append(
            PolicyEntry(
                name=provider_entry_name(provider),
                endpoints=profile.endpoints,
                binaries=profile.binaries,
            )
        )
    combined = SandboxPolicy(network=tuple(entries), filesystem=base.filesystem, limits=base.limits)
    bindings = expand_bindings(pairs)
    inputs: dict[str, Any] = {
        "sandbox": sandbox_id,
        "policy": base.canonical_json(),
        "providers": [[provider, content_hash(profile)] for provider, profile in pairs],
    }
    if credential_versions:
        inputs["credentials"] = sorted(credential_versions.items())
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return EffectiveConfig(
        sandbox_id,
        f"sha256:{digest}",
        combined,
        bindings,
        agent_uid,
        statics=expand_statics(pairs),
    )
