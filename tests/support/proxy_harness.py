"""Build effective configs from profile dicts and run an :class:`EgressProxy` on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from grantbox.profiles import (
    BindingSet,
    EffectiveConfig,
    GrantBinding,
    Profile,
    SandboxPolicy,
    build_effective_config,
)
from grantbox.proxy import EgressProxy, Limits, ProgramResolver, Resolver, relay

# Where profiles of unit-level tests say tokens come from; the in-test source never calls it.
UNUSED_TOKEN_ENDPOINT = "http://127.0.0.1:9/realms/grantbox/protocol/openid-connect/token"


def endpoint(host: str, port: int, **extra: Any) -> dict[str, Any]:
    """An endpoint dict; loopback upstreams need ``allowed_ips``."""
    return {"host": host, "port": port, **extra}


def grant_profile(
    profile_id: str,
    endpoints: Sequence[Mapping[str, Any]],
    *,
    token_endpoint: str = UNUSED_TOKEN_ENDPOINT,
    auth_style: str = "bearer",
    header_name: str = "",
    audience: str = "api://alpha",
    assertion_type: str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
) -> Profile:
    credential: dict[str, Any] = {
        "name": "token",
        "required": True,
        "auth_style": auth_style,
        "token_grant": {
            "token_endpoint": token_endpoint,
            "audience": audience,
            "client_assertion_type": assertion_type,
        },
    }
    if header_name:
        credential["header_name"] = header_name
    return Profile.model_validate(
        {"id": profile_id, "credentials": [credential], "endpoints": list(endpoints)}
    )


def make_config(
    *,
    policy: Sequence[Mapping[str, Any]] = (),
    providers: Sequence[tuple[str, Profile]] = (),
    sandbox_id: str = "s1",
) -> EffectiveConfig:
    """``policy`` is a list of endpoint dicts (one entry named ``test``)."""
    sandbox_policy = SandboxPolicy.model_validate(
        {"network": [{"name": "test", "endpoints": list(policy)}]} if policy else {}
    )
    return build_effective_config(sandbox_id, sandbox_policy, providers)


@dataclass
class Issued:
    value: str
    expires_at: float = 0.0


@dataclass
class RecordingTokens:
    """An in-test token source for injection decisions: hands out ``tok-N`` and records
    which bindings were asked for; ``fail`` makes it raise like the engine does."""

    fail: Exception | None = None
    token: str | None = None
    asked: list[GrantBinding] = field(default_factory=list)
    bindings: BindingSet | None = None

    async def obtain(self, binding: GrantBinding) -> Issued:
        self.asked.append(binding)
        if self.fail is not None:
            raise self.fail
        return Issued(self.token or f"tok-{len(self.asked)}")

    def replace_bindings(self, bindings: BindingSet) -> None:
        self.bindings = bindings


@dataclass
class RunningProxy:
    proxy: EgressProxy
    events: list[dict[str, Any]]
    ca_file: Path
    registry: CollectorRegistry

    @property
    def url(self) -> str:
        address = self.proxy.tcp_address
        assert address is not None
        return f"http://{address[0]}:{address[1]}"

    @property
    def port(self) -> int:
        address = self.proxy.tcp_address
        assert address is not None
        return address[1]

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@contextlib.asynccontextmanager
async def running_proxy(
    config: EffectiveConfig,
    tokens: Any,
    directory: Path,
    *,
    resolver: Resolver | None = None,
    upstream_ca_file: Path | None = None,
    limits: Limits | None = None,
    programs: ProgramResolver | None = None,
) -> AsyncIterator[RunningProxy]:
    """A proxy on a free loopback port, recording its events in ``events``.

    Without ``limits``, the default deadlines come from ``relay.HEAD_TIMEOUT`` and
    ``relay.IDLE_TIMEOUT`` (tests/security/test_slow_clients.py predates :class:`Limits`
    and shortens those names); new tests pass ``limits``.
    """
    events: list[dict[str, Any]] = []
    registry = CollectorRegistry()
    if limits is None:
        limits = Limits(head_timeout=relay.HEAD_TIMEOUT, idle_timeout=relay.IDLE_TIMEOUT)
    proxy = EgressProxy(
        config,
        tokens,
        resolver=resolver,
        upstream_ca_file=upstream_ca_file,
        events=events.append,
        registry=registry,
        limits=limits,
        programs=programs,
    )
    await proxy.start(tcp=("127.0.0.1", 0))
    ca_file = directory / "proxy-ca.pem"
    ca_file.write_bytes(proxy.ca_cert_pem)
    try:
        yield RunningProxy(proxy, events, ca_file, registry)
    finally:
        await proxy.stop()
