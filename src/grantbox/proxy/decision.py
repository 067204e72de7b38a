"""The one authorization step: every request, CONNECT or not, is decided here.

Pure: the effective config and plain request facts in, a :class:`Decision` out. The CONNECT
adapter asks with ``method="CONNECT"`` and no path (only host and port are known yet); every
request inside a tunnel and every absolute-form request is asked again with its method and
path. Default deny: nothing is allowed that no endpoint admits.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_plus

from grantbox.profiles import (
    Access,
    EffectiveConfig,
    Endpoint,
    Enforcement,
    GrantBinding,
    PatternError,
    TlsMode,
    cleartext_allowed,
    host_matches,
    host_specificity,
    is_loopback_host,
    parse_host_pattern,
    parse_path_pattern,
    path_matches,
    request_path,
)

from .answers import ErrorCode
from .destinations import IPAddress

Scheme = Literal["http", "https"]

# Methods each access preset admits (rules-free L7 policy).
ACCESS_METHODS: dict[Access, frozenset[str] | None] = {
    Access.READ_ONLY: frozenset({"GET", "HEAD", "OPTIONS"}),
    Access.READ_WRITE: frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"}),
    Access.FULL: None,  # every method
}

# Headers and the query parameter with which many web frameworks (Rails, Laravel, Express's
# method-override, Google APIs…) let a request say it is really another method.
METHOD_OVERRIDE_HEADERS = frozenset(
    {"x-http-method-override", "x-http-method", "x-method-override"}
)
_METHOD_PARAMETER = "_method"
# Methods whose answer echoes the request, headers included: never given a token.
ECHOING_METHODS = frozenset({"TRACE", "TRACK"})

_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)
_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)
_ENCODED_PERCENT = re.compile(r"%25", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the proxy does with one request (or one CONNECT)."""

    allowed: bool
    code: ErrorCode | None = None
    detail: str = ""
    entry: str | None = None
    endpoint: Endpoint | None = None
    binding: GrantBinding | None = None
    audit_denial: str | None = None  # the denial an ``audit`` endpoint let through

    @property
    def tls(self) -> TlsMode:
        return self.endpoint.tls if self.endpoint is not None else TlsMode.AUTO

    @property
    def enforcement(self) -> Enforcement:
        return self.endpoint.enforcement if self.endpoint is not None else Enforcement.ENFORCE

    @property
    def allowed_ips(self) -> tuple[str, ...]:
        return self.endpoint.allowed_ips if self.endpoint is not None else ()


def path_problem(path: str) -> str | None:
    """Why a request path is refused: encoded separators or dot segments.

    Two parsers reading ``/a%2f..%2fadmin`` or ``/a/../admin`` differently is how path
    rules get bypassed, so the proxy refuses them - also when the percent signs are
    themselves encoded (``%252e``, for upstreams that decode twice) and when a dot segment
    carries a ``;`` parameter (``/api/..;/admin``, which Tomcat and Spring resolve as
    ``..``). (The profile schema has no switch to allow them per endpoint yet; until it
    does they are always refused.)
    """
    if "\\" in path:
        return "backslash in the request path"
    unwrapped = path
    for _ in range(3):
        unwrapped = _ENCODED_PERCENT.sub("%", unwrapped)
    if _ENCODED_SEPARATOR.search(unwrapped):
        return "encoded '/' or '\\' in the request path"
    decoded_dots = _ENCODED_DOT.sub(".", unwrapped)
    for segment in decoded_dots.split("/"):
        if segment.split(";", 1)[0] in (".", ".."):
            return "dot segment in the request path"
    return None


def cleartext_address_problem(host: str, addresses: Sequence[IPAddress]) -> str | None:
    """Why a token may not go in cleartext to these addresses, although ``host`` allows it.

    A name is trusted with a cleartext token because it says loopback (``*.localhost``,
    127.0.0.0/8, ``::1``); the addresses the proxy is about to dial must say so too, or an
    override or resolver quirk would carry the token over the network. (In-cluster names
    resolve to cluster addresses, which no address test can tell apart; they are trusted by
    name as DESIGN §3.5 #3 says.)
    """
    if not is_loopback_host(host):
        return None
    for address in addresses:
        inner = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        if not (inner or address).is_loopback:
            return f"{host} is a loopback name but resolved to {address}"
    return None


def _restricts_methods(endpoint: Endpoint) -> bool:
    if endpoint.protocol is None:
        return False
    if endpoint.access is not None:
        return ACCESS_METHODS[endpoint.access] is not None
    return any(rule.method != "*" for rule in endpoint.rules)


def method_override_problem(
    endpoint: Endpoint, header_names: Iterable[str], target: str
) -> str | None:
    """Why a request that asks to be treated as another method is refused.

    Only where the endpoint restricts methods: there an override header or ``_method``
    query parameter would let the upstream run a method the policy refused. (A ``_method``
    field inside a form body cannot be seen here; see tests/security/README.md.)
    """
    if not _restricts_methods(endpoint):
        return None
    for name in header_names:
        if name.lower() in METHOD_OVERRIDE_HEADERS:
            return f"{name} on an endpoint that restricts methods"
    query = target.split("#", 1)[0].partition("?")[2]
    for field in query.split("&"):
        if unquote_plus(field.split("=", 1)[0]).lower() == _METHOD_PARAMETER:
            return "_method query parameter on an endpoint that restricts methods"
    return None


def _rules_admit(endpoint: Endpoint, method: str, path: str) -> bool:
    if endpoint.protocol is None:
        return True
    if endpoint.access is not None:
        methods = ACCESS_METHODS[endpoint.access]
        return methods is None or method in methods
    if not endpoint.rules:
        return True
    return any(
        (rule.method in ("*", method)) and path_matches(rule.path, path) for rule in endpoint.rules
    )


def _specificity(endpoint: Endpoint) -> tuple[tuple[int, ...], int]:
    # Equal host specificity: prefer an inspecting endpoint over a raw tunnel.
    return host_specificity(parse_host_pattern(endpoint.host)), int(endpoint.tls is TlsMode.AUTO)


def _host_port_candidates(
    config: EffectiveConfig, host: str, port: int
) -> list[tuple[str, Endpoint]]:
    found = []
    for entry, endpoint in config.endpoints():
        try:
            if port in endpoint.all_ports and host_matches(endpoint.host, host):
                parse_path_pattern(endpoint.path)
                for rule in endpoint.rules:
                    parse_path_pattern(rule.path)
                found.append((entry, endpoint))
        except PatternError:
            # Validation refuses these; an endpoint that slipped through matches nothing.
            continue
    found.sort(key=lambda pair: _specificity(pair[1]), reverse=True)
    return found


def authorize(
    config: EffectiveConfig,
    *,
    method: str,
    host: str,
    port: int,
    path: str | None,
    scheme: Scheme,
    header_names: Iterable[str] = (),
) -> Decision:
    """Admit or refuse one request.

    ``path`` is ``None`` for CONNECT (the tunnel is admitted by host and port; each request
    inside it is decided again). ``scheme`` is how the proxy will speak to the upstream:
    ``http`` means cleartext, where a token may go only to loopback or in-cluster hosts.
    ``header_names`` are the request's header names (method-override headers are refused
    where an endpoint restricts methods).
    """
    candidates = _host_port_candidates(config, host, port)
    if not candidates:
        return Decision(False, ErrorCode.POLICY_DENIED, f"no endpoint allows {host}:{port}")
    if path is None:
        entry, endpoint = candidates[0]
        return Decision(True, entry=entry, endpoint=endpoint)

    target = request_path(path)
    problem = path_problem(target)
    if problem is not None:
        return Decision(False, ErrorCode.INVALID_REQUEST, problem)

    chosen: tuple[str, Endpoint] | None = None
    audited: tuple[str, Endpoint] | None = None
    for entry, endpoint in candidates:
        if path_matches(endpoint.path, target) and _rules_admit(endpoint, method, target):
            chosen = (entry, endpoint)
            break
        if audited is None and endpoint.enforcement is Enforcement.AUDIT:
            audited = (entry, endpoint)

    audit_denial: str | None = None
    if chosen is None:
        detail = f"no endpoint allows {method} {host}:{port}{target}"
        if audited is None:
            return Decision(False, ErrorCode.POLICY_DENIED, detail)
        chosen, audit_denial = audited, detail

    entry, endpoint = chosen
    override = method_override_problem(endpoint, header_names, path)
    if override is not None:
        if endpoint.enforcement is not Enforcement.AUDIT:
            return Decision(False, ErrorCode.POLICY_DENIED, override, entry=entry)
        audit_denial = audit_denial or override
    binding = None
    if endpoint.tls is not TlsMode.SKIP:
        binding = config.bindings.select(host, port, target)
    if binding is not None and method.upper() in ECHOING_METHODS:
        return Decision(
            False,
            ErrorCode.POLICY_DENIED,
            f"{method} would echo the credential of binding {binding.id}",
            entry=entry,
        )
    if binding is not None and scheme == "http" and not cleartext_allowed(host):
        return Decision(
            False,
            ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED,
            f"binding {binding.id} needs TLS to {host}:{port}",
            entry=entry,
            endpoint=endpoint,
            binding=binding,
        )
    return Decision(
        True, entry=entry, endpoint=endpoint, binding=binding, audit_denial=audit_denial
    )
