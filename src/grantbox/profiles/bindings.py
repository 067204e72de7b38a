"""Grant bindings: each token-grant credential expanded into endpoint-bound entries.

A binding answers "for requests to this host pattern, port and path pattern, obtain a token
with these parameters and place it in this header". The proxy picks the most specific
binding that matches a request; the gateway refuses sets where two bindings tie.

Audience overrides inherit host, port and path from each endpoint they apply to and never
widen it: the binding covers the intersection of the endpoint and the override selector.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .canonical import content_hash
from .endpoint_binding import EndpointBinding
from .model import AuthStyle, ClientAuth, Credential, Endpoint, GrantType, Profile, TokenGrant
from .patterns import (
    HostPattern,
    PathPattern,
    PatternError,
    host_intersection,
    parse_host_pattern,
    parse_path_pattern,
    path_intersection,
)
from .token_endpoint import derive_svid_audience

DEFAULT_ORIGIN = "default"


@dataclass(frozen=True, slots=True)
class GrantBinding(EndpointBinding):
    """One endpoint-bound token grant, with every default already resolved."""

    provider: str
    credential: str
    profile: str
    host: str
    port: int
    path: str
    audience: str
    scopes: tuple[str, ...]
    token_endpoint: str
    svid_audience: str
    assertion_type: str
    cache_ttl_seconds: int
    header_name: str
    header_style: str
    origin: str = DEFAULT_ORIGIN
    grant_type: str = str(GrantType.CLIENT_CREDENTIALS)
    client_auth: str = str(ClientAuth.JWT_SVID)
    client_id: str = ""
    resource: tuple[str, ...] = ()
    requested_token_type: str = ""
    token_endpoint_ca: str = field(default="", repr=False)

    def header_value(self, token: str) -> str:
        return f"Bearer {token}" if self.header_style == AuthStyle.BEARER else token

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scopes"] = list(self.scopes)
        data["resource"] = list(self.resource)
        data["id"] = self.id
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GrantBinding:
        values = {k: v for k, v in data.items() if k != "id"}
        values["scopes"] = tuple(values.get("scopes", ()))
        values["resource"] = tuple(values.get("resource", ()))
        return cls(**values)


def _sort_key(binding: GrantBinding) -> tuple[Any, ...]:
    return (binding.provider, binding.credential, binding.port, binding.host, binding.path)


@dataclass(frozen=True, slots=True)
class BindingSet:
    """The bindings of a set of attached providers, sorted, with the hash of their inputs."""

    bindings: tuple[GrantBinding, ...]
    content_hash: str
    _by_port: dict[int, tuple[GrantBinding, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        index: dict[int, list[GrantBinding]] = {}
        for binding in self.bindings:
            index.setdefault(binding.port, []).append(binding)
        self._by_port.update({port: tuple(items) for port, items in index.items()})

    def __iter__(self) -> Any:
        return iter(self.bindings)

    def __len__(self) -> int:
        return len(self.bindings)

    def on_port(self, port: int) -> tuple[GrantBinding, ...]:
        return self._by_port.get(port, ())

    def select(self, host: str, port: int, path: str) -> GrantBinding | None:
        """The most specific binding for a request, or ``None`` when none applies."""
        return select_binding(self._by_port.get(port, ()), host, port, path)

    def providers(self) -> frozenset[str]:
        return frozenset(b.provider for b in self.bindings)

    def to_list(self) -> list[dict[str, Any]]:
        return [b.to_dict() for b in self.bindings]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, Any]], content_hash: str = "") -> BindingSet:
        bindings = tuple(sorted((GrantBinding.from_dict(i) for i in items), key=_sort_key))
        return cls(bindings, content_hash or _hash_bindings(bindings))


def select_binding(
    bindings: Iterable[GrantBinding], host: str, port: int, path: str
) -> GrantBinding | None:
    """Most specific matching binding. Ties cannot happen in a validated set; if one slips
    through, the choice is still deterministic (by id), never a coin toss."""
    best: GrantBinding | None = None
    best_key: tuple[Any, ...] = ()
    for binding in bindings:
        if not binding.matches(host, port, path):
            continue
        key = (*binding.specificity(), binding.id)
        if best is None or key > best_key:
            best, best_key = binding, key
    return best


def _hash_bindings(bindings: Sequence[GrantBinding]) -> str:
    text = json.dumps([b.to_dict() for b in bindings], sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Candidate:
    binding: GrantBinding
    override_index: int | None
    endpoint_index: int


def _header(credential: Credential) -> tuple[str, str]:
    style = AuthStyle.HEADER if credential.auth_style is AuthStyle.HEADER else AuthStyle.BEARER
    name = credential.header_name.strip() or "Authorization"
    return name, str(style)


def _make(
    provider: str,
    profile: Profile,
    credential: Credential,
    grant: TokenGrant,
    host: HostPattern,
    port: int,
    path: PathPattern,
    audience: str,
    scopes: tuple[str, ...],
    resource: tuple[str, ...],
    origin: str,
) -> GrantBinding:
    header_name, header_style = _header(credential)
    return GrantBinding(
        provider=provider,
        credential=credential.name,
        profile=profile.id,
        host=host.text,
        port=port,
        path=path.text,
        audience=audience,
        scopes=scopes,
        token_endpoint=grant.token_endpoint,
        svid_audience=_svid_audience(grant),
        assertion_type=str(grant.client_assertion_type),
        cache_ttl_seconds=grant.cache_ttl_seconds,
        header_name=header_name,
        header_style=header_style,
        origin=origin,
        grant_type=str(grant.grant_type),
        client_auth=str(grant.effective_client_auth),
        client_id=grant.client_id,
        resource=resource,
        requested_token_type=str(grant.requested_token_type or ""),
        token_endpoint_ca=grant.token_endpoint_ca,
    )


def _svid_audience(grant: TokenGrant) -> str:
    """The JWT-SVID audience, or empty when the grant sends no JWT-SVID at all."""
    if not grant.sends_jwt_svid:
        return ""
    return grant.jwt_svid_audience or derive_svid_audience(grant.token_endpoint)


def _endpoint_patterns(endpoint: Endpoint) -> tuple[HostPattern, PathPattern]:
    return parse_host_pattern(endpoint.host), parse_path_pattern(endpoint.path)


def credential_candidates(
    provider: str, profile: Profile, credential: Credential
) -> list[_Candidate]:
    """Every binding one credential produces, before defaults are replaced by overrides.

    Raises :class:`PatternError` when a pattern is invalid; validation reports those first.
    """
    grant = credential.token_grant
    if grant is None:
        return []
    out: list[_Candidate] = []
    for e_index, endpoint in enumerate(profile.endpoints):
        e_host, e_path = _endpoint_patterns(endpoint)
        for port in endpoint.all_ports:
            out.append(
                _Candidate(
                    _make(
                        provider,
                        profile,
                        credential,
                        grant,
                        e_host,
                        port,
                        e_path,
                        grant.audience,
                        grant.scopes,
                        grant.resource,
                        DEFAULT_ORIGIN,
                    ),
                    None,
                    e_index,
                )
            )
            for o_index, override in enumerate(grant.audience_overrides):
                if override.port and override.port != port:
                    continue
                o_host = parse_host_pattern(override.host) if override.host else e_host
                o_path = parse_path_pattern(override.path) if override.path else e_path
                host = host_intersection(e_host, o_host)
                path = path_intersection(e_path, o_path)
                if host is None or path is None:
                    continue
                out.append(
                    _Candidate(
                        _make(
                            provider,
                            profile,
                            credential,
                            grant,
                            host,
                            port,
                            path,
                            override.audience or grant.audience,
                            override.scopes or grant.scopes,
                            override.resource or grant.resource,
                            f"audience_overrides[{o_index}]",
                        ),
                        o_index,
                        e_index,
                    )
                )
    return out


def resolve_candidates(candidates: Iterable[_Candidate]) -> list[GrantBinding]:
    """Collapse candidates per selector: an override replaces the default it coincides
    with; identical duplicates (from overlapping endpoints) collapse into one."""
    chosen: dict[tuple[str, int, str], _Candidate] = {}
    for candidate in candidates:
        key = candidate.binding.selector
        current = chosen.get(key)
        if current is None or (
            current.override_index is None and candidate.override_index is not None
        ):
            chosen[key] = candidate
    return [c.binding for c in chosen.values()]


def expand_bindings(attachments: Iterable[tuple[str, Profile]]) -> BindingSet:
    """Bindings for the providers attached to one sandbox: ``(provider name, profile)``.

    Deterministic: sorted, and carrying a hash of the provider names and profile contents
    that produced it, so any change of input changes the hash.
    """
    pairs = sorted(attachments, key=lambda pair: pair[0])
    bindings: list[GrantBinding] = []
    for provider, profile in pairs:
        for _, credential in profile.grant_credentials:
            try:
                candidates = credential_candidates(provider, profile, credential)
            except PatternError as exc:
                raise ValueError(
                    f"profile '{profile.id}' has an invalid pattern ({exc}); lint it first"
                ) from exc
            bindings.extend(resolve_candidates(candidates))
    bindings.sort(key=_sort_key)
    inputs = json.dumps(
        [[provider, content_hash(profile)] for provider, profile in pairs], separators=(",", ":")
    )
    digest = "sha256:" + hashlib.sha256(inputs.encode()).hexdigest()
    return BindingSet(tuple(bindings), digest)
