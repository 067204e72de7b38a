"""What one authorization decides, and the pure checks it is made of.

:class:`Decision` is the answer of :meth:`grantbox.proxy.policy.CompiledPolicy.authorize`;
the functions here judge one aspect of a request each (its path, a method override, the
addresses a cleartext token would go to) and are tested on their own.
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
    Endpoint,
    Enforcement,
    GrantBinding,
    StaticBinding,
    TlsMode,
    is_loopback_host,
)

from .answers import ErrorCode
from .destinations import IPAddress, Network

Scheme = Literal["http", "https"]

# Methods each access preset admits (rules-free L7 policy).
ACCESS_METHODS: dict[Access, frozenset[str] | None] = {
    Access.READ_ONLY: frozenset({"GET", "HEAD", "OPTIONS"}),
    Access.READ_WRITE: frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"}),
    Access.FULL: None,  # every method
}

# Headers and the query parameter with which many web frameworks (Rails, Laravel, Symfony,
# Express's method-override, Google APIs…) let a request say it is really another method.
# Header names are compared with '_' read as '-': CGI and PHP turn both into the same
# HTTP_X_HTTP_METHOD_OVERRIDE variable.
METHOD_OVERRIDE_HEADERS = frozenset(
    {"x-http-method-override", "x-http-method", "x-method-override"}
)
_METHOD_PARAMETER = "_method"
# PHP turns ' ', '.' and an unclosed '[' in parameter names into '_' (and drops leading
# spaces first), so ".method", "[method" and " _method" reach Symfony/Laravel as "_method";
# " method" is refused too (a parser that keeps the space reads it so).
# Rack and other older parsers also split the query on ';'.
_QUERY_SEPARATORS = re.compile(r"[&;]")
_PHP_NAME_MANGLING = str.maketrans({" ": "_", ".": "_", "[": "_"})
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
    # The token grants to inject: for each header, the most specific matching binding.
    bindings: tuple[GrantBinding, ...] = ()
    audit_denial: str | None = None  # the denial an ``audit`` endpoint let through
    networks: tuple[Network, ...] = ()  # the endpoint's ``allowed_ips``, parsed
    # Stored credentials that add their header (or query parameter) when the request has
    # none: for each place, the most specific binding (a grant for the same place wins
    # only by being more specific).
    placed: tuple[StaticBinding, ...] = ()

    @property
    def binding(self) -> GrantBinding | None:
        """The first grant binding (the only one, unless the endpoint carries several)."""
        return self.bindings[0] if self.bindings else None

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
    if "%" not in path and "." not in path:
        return None  # nothing encoded and no dot: no separator or dot segment to hide
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


def parameter_names(raw: str) -> frozenset[str]:
    """The names common frameworks may give a query or form parameter: percent-decoded,
    then mangled the way PHP does (``.method``, `` method`` and ``[method`` become
    ``_method``, ``_method[]`` is the array ``_method``), with and without the leading
    spaces PHP drops."""
    decoded = unquote_plus(raw).split("\x00", 1)[0]
    return frozenset(_php_name(name) for name in (decoded, decoded.lstrip(" ")))


def _php_name(name: str) -> str:
    bracket = name.find("[")
    if bracket >= 0 and "]" in name[bracket:]:
        name = name[:bracket]
    return name.translate(_PHP_NAME_MANGLING).lower()


def is_method_override_header(name: str) -> bool:
    return name.lower().replace("_", "-") in METHOD_OVERRIDE_HEADERS


def method_override_problem(
    endpoint: Endpoint, header_names: Iterable[str], target: str
) -> str | None:
    """Why a request that asks to be treated as another method is refused.

    Only where the endpoint restricts methods: there an override header or ``_method``
    query parameter (in any spelling a framework reads as one) would let the upstream run
    a method the policy refused. (A ``_method`` field inside a form body cannot be seen
    here; see tests/security/README.md.)
    """
    if not _restricts_methods(endpoint):
        return None
    for name in header_names:
        if is_method_override_header(name):
            return f"{name} on an endpoint that restricts methods"
    query = target.split("#", 1)[0].partition("?")[2]
    if not query:
        return None
    for item in _QUERY_SEPARATORS.split(query):
        if _METHOD_PARAMETER in parameter_names(item.split("=", 1)[0]):
            return "_method query parameter on an endpoint that restricts methods"
    return None
