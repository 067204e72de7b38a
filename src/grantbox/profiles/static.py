"""Stored (static) credentials: secrets the agent only ever holds as placeholders.

A provider created with ``--credential NAME=VALUE`` stores a value for a credential that has
no ``token_grant``. The agent's environment gets an opaque placeholder in the credential's
``env_var``; the proxy puts the value in place of that placeholder only in requests to the
profile's endpoints (host, port and path), and - when the credential names a place
(``auth_style``) - adds it itself to such requests that do not carry it.

Expansion mirrors :mod:`.bindings`: each static credential x endpoint x port is one
:class:`StaticBinding`, plain data the gateway sends to the supervisor. Values never travel
in bindings: :class:`StaticSecrets` carries them (with the supervisor's placeholders) and
shows neither in a ``repr``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .endpoint_binding import EndpointBinding
from .model import AuthStyle, Credential, Endpoint, Profile, TlsMode
from .patterns import (
    HostPattern,
    PathPattern,
    PatternError,
    parse_host_pattern,
    parse_path_pattern,
)

# The environment a sandbox sets itself (the sandbox package reads these lists, so one
# rule decides what a profile's env_var and a sandbox's own variables may be).
INTERNAL_ENV_PREFIXES = ("SPIFFE_", "GRANTBOX_", "SPIRE_")
PROXY_ENV_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
CA_TRUST_ENV_VARIABLES = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
)
MANAGED_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "NO_PROXY",
        "no_proxy",
        *CA_TRUST_ENV_VARIABLES,
        *PROXY_ENV_VARIABLES,
        *(v.lower() for v in PROXY_ENV_VARIABLES),
    }
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MANAGED_UPPER = frozenset(n.upper() for n in MANAGED_ENV_NAMES)

# Bytes a stored value may not hold: CR, LF and NUL end a header line or a C string, and
# the other control bytes (HTAB aside) are refused in header values by HTTP itself.
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def env_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one of the agent's environment variables, or ``None``."""
    if not _ENV_NAME.fullmatch(name):
        return f"{name!r} is not a valid environment variable name"
    if name.upper().startswith(INTERNAL_ENV_PREFIXES):
        return f"{name} is reserved for grantbox and the workload identity"
    if name.upper() in _MANAGED_UPPER:
        return f"{name} is set by the sandbox and cannot be overridden"
    return None


def credential_value_problem(value: str) -> str | None:
    """Why a stored credential value cannot be sent, or ``None``."""
    if not value:
        return "must not be empty"
    if _UNSAFE_VALUE.search(value):
        return "must not contain CR, LF, NUL or other control characters"
    if value != value.strip(" \t"):
        return "must not start or end with a space or tab (a header value cannot)"
    return None


@dataclass(frozen=True, slots=True)
class StaticBinding(EndpointBinding):
    """One endpoint a stored credential may be sent to, and how the proxy places it."""

    provider: str
    credential: str
    profile: str
    host: str
    port: int
    path: str
    env_var: str
    auth_style: str = ""  # "" (placeholder only) | bearer | header | basic | query
    header_name: str = ""  # bearer, header and basic
    query_param: str = ""  # query
    body_rewrite: bool = False  # the endpoint's credential_body_rewrite

    @property
    def placement_key(self) -> str:
        """What the proxy writes on the request: a lower-case header name, ``?param`` for a
        query parameter, or ``""`` when it only replaces the placeholder."""
        if self.auth_style == AuthStyle.QUERY:
            return f"?{self.query_param}"
        return self.header_name.lower() if self.auth_style else ""

    def header_value(self, value: str) -> str:
        if self.auth_style == AuthStyle.BEARER:
            return f"Bearer {value}"
        if self.auth_style == AuthStyle.BASIC:
            return "Basic " + base64.b64encode(value.encode()).decode("ascii")
        return value

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["id"] = self.id
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StaticBinding:
        return cls(**{k: v for k, v in data.items() if k != "id"})


def _sort_key(binding: StaticBinding) -> tuple[Any, ...]:
    return (binding.provider, binding.credential, binding.port, binding.host, binding.path)


@dataclass(frozen=True, slots=True)
class StaticSet:
    """The static bindings of a sandbox's attached providers, sorted."""

    bindings: tuple[StaticBinding, ...] = ()
    _by_port: dict[int, tuple[StaticBinding, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        index: dict[int, list[StaticBinding]] = {}
        for binding in self.bindings:
            index.setdefault(binding.port, []).append(binding)
        self._by_port.update({port: tuple(items) for port, items in index.items()})

    def __iter__(self) -> Iterator[StaticBinding]:
        return iter(self.bindings)

    def __len__(self) -> int:
        return len(self.bindings)

    def matching(self, host: str, port: int, path: str) -> tuple[StaticBinding, ...]:
        """Every binding that covers a request (any credential)."""
        return tuple(b for b in self._by_port.get(port, ()) if b.matches(host, port, path))

    def variables(self) -> dict[str, str]:
        """``owner -> env_var`` of every credential with a binding."""
        return {b.owner: b.env_var for b in self.bindings}

    def to_list(self) -> list[dict[str, Any]]:
        return [b.to_dict() for b in self.bindings]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, Any]]) -> StaticSet:
        return cls(tuple(sorted((StaticBinding.from_dict(i) for i in items), key=_sort_key)))


def _placement(credential: Credential) -> tuple[str, str, str]:
    """``(auth_style, header_name, query_param)`` with defaults resolved."""
    style = credential.auth_style
    if style is None:
        return "", "", ""
    if style is AuthStyle.QUERY:
        return str(style), "", credential.query_param.strip()
    return str(style), credential.header_name.strip() or "Authorization", ""


def static_credential_bindings(
    provider: str, profile: Profile, credential: Credential
) -> list[StaticBinding]:
    """Every binding of one stored credential: one per endpoint and port, ``tls: skip``
    endpoints left out (raw tunnels, never read). Raises :class:`PatternError`."""
    if not credential.is_static:
        return []
    style, header, query = _placement(credential)
    out: dict[tuple[str, int, str], StaticBinding] = {}
    for endpoint in profile.endpoints:
        if endpoint.tls is TlsMode.SKIP:
            continue
        host, path = _patterns(endpoint)
        for port in endpoint.all_ports:
            binding = StaticBinding(
                provider=provider,
                credential=credential.name,
                profile=profile.id,
                host=host.text,
                port=port,
                path=path.text,
                env_var=credential.placeholder_variable,
                auth_style=style,
                header_name=header,
                query_param=query,
                body_rewrite=endpoint.credential_body_rewrite,
            )
            current = out.get(binding.selector)
            # Two endpoints with one selector: body rewriting if either opts in.
            if current is None or (binding.body_rewrite and not current.body_rewrite):
                out[binding.selector] = binding
    return list(out.values())


def _patterns(endpoint: Endpoint) -> tuple[HostPattern, PathPattern]:
    return parse_host_pattern(endpoint.host), parse_path_pattern(endpoint.path)


def expand_statics(attachments: Iterable[tuple[str, Profile]]) -> StaticSet:
    """Static bindings for the providers attached to one sandbox, sorted."""
    bindings: list[StaticBinding] = []
    for provider, profile in sorted(attachments, key=lambda pair: pair[0]):
        for _, credential in profile.static_credentials:
            try:
                bindings.extend(static_credential_bindings(provider, profile, credential))
            except PatternError as exc:
                raise ValueError(
                    f"profile '{profile.id}' has an invalid pattern ({exc}); lint it first"
                ) from exc
    return StaticSet(tuple(sorted(bindings, key=_sort_key)))


def variable_conflicts(statics: StaticSet) -> list[str]:
    """One message per environment variable that two credentials would both set."""
    holders: dict[str, list[str]] = {}
    for owner, variable in sorted(statics.variables().items()):
        holders.setdefault(variable, []).append(owner)
    return [
        f"credentials {', '.join(repr(o) for o in owners)} would all set the agent's "
        f"${variable}; give one an env_var of its own or attach only one of their providers"
        for variable, owners in sorted(holders.items())
        if len(owners) > 1
    ]


@dataclass(frozen=True, slots=True)
class StaticSecrets:
    """Stored values (``owner -> value``, from the gateway) and the placeholders standing
    in for them (``owner -> placeholder``, the supervisor's). Never shown, never hashed
    into anything published."""

    values: Mapping[str, str] = field(default_factory=dict)
    placeholders: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"StaticSecrets(<{len(self.values)} values hidden>)"

    def with_placeholders(self, placeholders: Mapping[str, str]) -> StaticSecrets:
        return StaticSecrets(dict(self.values), dict(placeholders))
