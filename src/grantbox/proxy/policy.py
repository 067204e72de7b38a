"""The effective config compiled once per update: per-request work is lookups.

:func:`compile_policy` parses every endpoint's host and path patterns, its rules, its
``allowed_ips`` networks and its entry's ``binaries`` once; :meth:`CompiledPolicy.authorize`
then decides a request with set and dict lookups plus the pattern matchers of
:mod:`grantbox.profiles` (the one pattern semantics, DESIGN §3.2). Which endpoints can
serve a ``(host, port)`` is remembered in a bounded table, since an agent talks to few
hosts. Default deny: nothing is allowed that no endpoint admits.

Pure: plain data in, a :class:`Decision` out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from grantbox.profiles import (
    EffectiveConfig,
    Endpoint,
    Enforcement,
    GrantBinding,
    HostPattern,
    PathPattern,
    PatternError,
    Placement,
    StaticBinding,
    TlsMode,
    cleartext_allowed,
    host_matches,
    host_specificity,
    most_specific_each,
    parse_host_pattern,
    parse_path_pattern,
    path_matches,
    provider_entry_name,
    request_path,
)

from .answers import ErrorCode
from .decision import (
    ACCESS_METHODS,
    ECHOING_METHODS,
    Decision,
    cleartext_address_problem,
    method_override_problem,
    path_problem,
)
from .destinations import IPAddress, Network, validate_addresses
from .placeholders import PlaceholderTable, compile_placeholders

Scheme = Literal["http", "https"]

# (host, port) pairs whose candidate endpoints are remembered; an agent talks to few hosts.
CANDIDATE_TABLE_SIZE = 1024


FileId = tuple[int, int]  # (st_dev, st_ino) of an executable


@dataclass(frozen=True, slots=True)
class Program:
    """Who holds an agent connection: for each process holding its socket, the file
    identities of that process's executable and of every ancestor's (up to the sandbox's
    init), as the kernel reports them."""

    holders: tuple[frozenset[FileId], ...] = ()

    def runs_one_of(self, binaries: frozenset[FileId]) -> bool:
        """Every holder is (or descends from) one of ``binaries``: a socket shared with
        another program does not count as the listed program's."""
        return bool(self.holders) and all(not binaries.isdisjoint(h) for h in self.holders)


# A connection whose program could not be found (no resolver, process gone, not ours).
UNKNOWN_PROGRAM = Program()


@dataclass(frozen=True, slots=True)
class CompiledEndpoint:
    entry: str
    endpoint: Endpoint
    host: HostPattern
    path: PathPattern
    rules: tuple[tuple[str, PathPattern], ...]
    methods: frozenset[str] | None  # an access preset's methods; None = every method
    networks: tuple[Network, ...]
    binaries: frozenset[FileId] | None  # None: any program may use it
    rank: tuple[tuple[int, ...], int]

    def admits(self, method: str, path: str) -> bool:
        endpoint = self.endpoint
        if not path_matches(self.path, path):
            return False
        if endpoint.protocol is None:
            return True
        if endpoint.access is not None:
            return self.methods is None or method in self.methods
        if not self.rules:
            return True
        return any(m in ("*", method) and path_matches(p, path) for m, p in self.rules)

    def serves(self, program: Program | None) -> bool:
        if self.binaries is None:
            return True
        return program is not None and program.runs_one_of(self.binaries)


def _compile_endpoint(
    entry: str, endpoint: Endpoint, binaries: frozenset[FileId] | None
) -> CompiledEndpoint:
    host = parse_host_pattern(endpoint.host)
    rules = tuple((rule.method, parse_path_pattern(rule.path)) for rule in endpoint.rules)
    methods = ACCESS_METHODS[endpoint.access] if endpoint.access is not None else None
    networks = tuple(ipaddress.ip_network(value, strict=False) for value in endpoint.allowed_ips)
    return CompiledEndpoint(
        entry=entry,
        endpoint=endpoint,
        host=host,
        path=parse_path_pattern(endpoint.path),
        rules=rules,
        methods=methods,
        networks=networks,
        binaries=binaries,
        # Equal host specificity: prefer an inspecting endpoint over a raw tunnel.
        rank=(host_specificity(host), int(endpoint.tls is TlsMode.AUTO)),
    )


@dataclass(slots=True)
class CompiledPolicy:
    """One effective config, ready for per-request decisions."""

    config: EffectiveConfig
    by_port: dict[int, tuple[CompiledEndpoint, ...]]
    # binding provider → the file identities its profile's ``binaries`` allow
    provider_binaries: dict[str, frozenset[FileId]]
    unenforceable: tuple[str, ...]  # entries with binaries that could not be identified
    placeholders: PlaceholderTable = field(default_factory=PlaceholderTable, repr=False)
    _candidates: dict[tuple[str, int], tuple[CompiledEndpoint, ...]] = field(
        default_factory=dict, repr=False
    )
    _bindings: dict[
        tuple[str, int, str], tuple[tuple[GrantBinding, ...], tuple[StaticBinding, ...]]
    ] = field(default_factory=dict, repr=False)
    _validated: dict[
        tuple[tuple[IPAddress, ...], tuple[Network, ...]],
        tuple[tuple[IPAddress, ...], str | None],
    ] = field(default_factory=dict, repr=False)
    _cleartext: dict[tuple[str, tuple[IPAddress, ...]], str | None] = field(
        default_factory=dict, repr=False
    )
    _cleartext_hosts: dict[str, bool] = field(default_factory=dict, repr=False)
    _uses_binaries: bool | None = field(default=None, repr=False)

    @property
    def sandbox_id(self) -> str:
        return self.config.sandbox_id

    @property
    def uses_binaries(self) -> bool:
        """Whether any decision may need the connecting program (asked on every request:
        found once)."""
        if self._uses_binaries is None:
            self._uses_binaries = bool(self.provider_binaries) or any(
                e.binaries is not None for group in self.by_port.values() for e in group
            )
        return self._uses_binaries

    def candidates(self, host: str, port: int) -> tuple[CompiledEndpoint, ...]:
        """Endpoints serving ``host:port``, most specific first (remembered, bounded)."""
        key = (host, port)
        found = self._candidates.get(key)
        if found is None:
            matching = [e for e in self.by_port.get(port, ()) if host_matches(e.host, host)]
            matching.sort(key=lambda e: e.rank, reverse=True)
            found = tuple(matching)
            if len(self._candidates) >= CANDIDATE_TABLE_SIZE:
                self._candidates.clear()
            self._candidates[key] = found
        return found

    def bindings_for(
        self, host: str, port: int, path: str
    ) -> tuple[tuple[GrantBinding, ...], tuple[StaticBinding, ...]]:
        """What a request path gets (remembered, bounded): for each header or query
        parameter a credential writes, the most specific matching binding - token grants,
        and stored credentials with a value that place themselves."""
        key = (host, port, path)
        found = self._bindings.get(key)
        if found is None:
            candidates: list[Placement] = list(self.config.bindings.on_port(port))
            candidates.extend(
                b
                for b in self.placeholders.matching(host, port, path)
                if b.placement_key and b.owner in self.placeholders.by_owner
            )
            chosen = most_specific_each(candidates, host, port, path)
            found = (
                tuple(b for b in chosen if isinstance(b, GrantBinding)),
                tuple(b for b in chosen if isinstance(b, StaticBinding)),
            )
            if len(self._bindings) >= CANDIDATE_TABLE_SIZE:
                self._bindings.clear()
            self._bindings[key] = found
        return found

    def binding_for(self, host: str, port: int, path: str) -> GrantBinding | None:
        """The first grant binding for a request path (see :meth:`bindings_for`)."""
        grants = self.bindings_for(host, port, path)[0]
        return grants[0] if grants else None

    def usable_addresses(
        self, addresses: tuple[IPAddress, ...], networks: tuple[Network, ...]
    ) -> tuple[tuple[IPAddress, ...], str | None]:
        """:func:`validate_addresses` for an endpoint's networks (remembered, bounded)."""
        key = (addresses, networks)
        found = self._validated.get(key)
        if found is None:
            found = validate_addresses(addresses, networks)
            if len(self._validated) >= CANDIDATE_TABLE_SIZE:
                self._validated.clear()
            self._validated[key] = found
        return found

    def cleartext_problem(self, host: str, addresses: tuple[IPAddress, ...]) -> str | None:
        """:func:`cleartext_address_problem` (remembered, bounded)."""
        key = (host, addresses)
        try:
            return self._cleartext[key]
        except KeyError:
            pass
        problem = cleartext_address_problem(host, addresses)
        if len(self._cleartext) >= CANDIDATE_TABLE_SIZE:
            self._cleartext.clear()
        self._cleartext[key] = problem
        return problem

    def needs_program(self, host: str, port: int, path: str | None) -> bool:
        """Whether deciding this request needs to know which program sent it."""
        if not self.uses_binaries:
            return False
        if any(e.binaries is not None for e in self.candidates(host, port)):
            return True
        if path is None or not self.provider_binaries:
            return False
        target = request_path(path)
        grants = self.bindings_for(host, port, target)[0]
        statics = self.placeholders.matching(host, port, target)
        concerned: tuple[Placement, ...] = (*grants, *statics)
        return any(b.provider in self.provider_binaries for b in concerned)

    def authorize(
        self,
        *,
        method: str,
        host: str,
        port: int,
        path: str | None,
        scheme: Scheme,
        header_names: Iterable[str] = (),
        program: Program | None = None,
    ) -> Decision:
        """Admit or refuse one request.

        ``path`` is ``None`` for CONNECT (the tunnel is admitted by host and port; each
        request inside it is decided again). ``scheme`` is how the proxy will speak to the
        upstream: ``http`` means cleartext, where a token may go only to loopback or
        in-cluster hosts. ``header_names`` are the request's header names (method-override
        headers are refused where an endpoint restricts methods). ``program`` is who opened
        the connection, needed only where an entry lists ``binaries``.
        """
        reachable = self.candidates(host, port)
        candidates = [e for e in reachable if e.serves(program)]
        if not candidates:
            detail = f"no endpoint allows {host}:{port}"
            if reachable:
                detail += " for the program that opened this connection"
            return Decision(False, ErrorCode.POLICY_DENIED, detail)
        if path is None:
            chosen = candidates[0]
            return Decision(
                True, entry=chosen.entry, endpoint=chosen.endpoint, networks=chosen.networks
            )

        target = request_path(path)
        problem = path_problem(target)
        if problem is not None:
            return Decision(False, ErrorCode.INVALID_REQUEST, problem)

        admitted: CompiledEndpoint | None = None
        audited: CompiledEndpoint | None = None
        for candidate in candidates:
            if candidate.admits(method, target):
                admitted = candidate
                break
            if audited is None and candidate.endpoint.enforcement is Enforcement.AUDIT:
                audited = candidate

        audit_denial: str | None = None
        if admitted is None:
            detail = f"no endpoint allows {method} {host}:{port}{target}"
            if audited is None:
                return Decision(False, ErrorCode.POLICY_DENIED, detail)
            admitted, audit_denial = audited, detail

        entry, endpoint = admitted.entry, admitted.endpoint
        override = method_override_problem(endpoint, header_names, path)
        if override is not None:
            if endpoint.enforcement is not Enforcement.AUDIT:
                return Decision(False, ErrorCode.POLICY_DENIED, override, entry=entry)
            audit_denial = audit_denial or override
        grants: tuple[GrantBinding, ...] = ()
        placed: tuple[StaticBinding, ...] = ()
        if endpoint.tls is not TlsMode.SKIP:
            grants, placed = self.bindings_for(host, port, target)
        applying: tuple[Placement, ...] = (*grants, *placed)
        for binding in applying:
            refusal = self.credential_refusal(binding, method, host, port, scheme, program)
            if refusal is not None:
                code, detail = refusal
                return Decision(
                    False,
                    code,
                    detail,
                    entry=entry,
                    endpoint=endpoint,
                    bindings=grants,
                    networks=admitted.networks,
                    placed=placed,
                )
        return Decision(
            True,
            entry=entry,
            endpoint=endpoint,
            bindings=grants,
            audit_denial=audit_denial,
            networks=admitted.networks,
            placed=placed,
        )

    def _cleartext_host(self, host: str) -> bool:
        allowed = self._cleartext_hosts.get(host)
        if allowed is None:
            allowed = cleartext_allowed(host)
            if len(self._cleartext_hosts) >= CANDIDATE_TABLE_SIZE:
                self._cleartext_hosts.clear()
            self._cleartext_hosts[host] = allowed
        return allowed

    def credential_refusal(
        self,
        binding: Placement,
        method: str,
        host: str,
        port: int,
        scheme: Scheme,
        program: Program | None,
    ) -> tuple[ErrorCode, str] | None:
        """Why a credential may not go on this request: one set of rules for a token grant
        and a stored credential (echoing methods, the provider's binaries, cleartext)."""
        what = "binding" if isinstance(binding, GrantBinding) else "stored credential"
        if method.upper() in ECHOING_METHODS:
            return ErrorCode.POLICY_DENIED, f"{method} would echo the credential of {binding.id}"
        allowed = self.provider_binaries.get(binding.provider)
        if allowed is not None and (program is None or not program.runs_one_of(allowed)):
            return (
                ErrorCode.POLICY_DENIED,
                f"{what} {binding.id} is only for the provider's binaries",
            )
        if scheme == "http" and not self._cleartext_host(host):
            return (
                ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED,
                f"{what} {binding.id} needs TLS to {host}:{port}",
            )
        return None


def compile_policy(
    config: EffectiveConfig,
    executables: Mapping[str, FileId | None] | None = None,
) -> CompiledPolicy:
    """Compile ``config``. ``executables`` maps each path named in a ``binaries`` list to
    the file identity it resolves to (symlinks followed) in the agent's filesystem, or
    ``None`` when it does not exist there; without it, such entries admit no program.

    An endpoint whose patterns do not parse (validation refuses these) matches nothing.
    """
    known = executables or {}
    by_port: dict[int, list[CompiledEndpoint]] = {}
    provider_binaries: dict[str, frozenset[FileId]] = {}
    unenforceable: list[str] = []
    providers = {
        provider_entry_name(b.provider): b.provider for b in (*config.bindings, *config.statics)
    }
    for entry in config.policy.network:
        binaries: frozenset[FileId] | None = None
        if entry.binaries:
            binaries = frozenset(i for i in (known.get(p) for p in entry.binaries) if i)
            if not binaries:
                unenforceable.append(entry.name)
            if entry.name in providers:
                provider_binaries[providers[entry.name]] = binaries
        for endpoint in entry.endpoints:
            try:
                compiled = _compile_endpoint(entry.name, endpoint, binaries)
            except (PatternError, ValueError):
                continue
            for port in endpoint.all_ports:
                by_port.setdefault(port, []).append(compiled)
    return CompiledPolicy(
        config=config,
        by_port={port: tuple(group) for port, group in by_port.items()},
        provider_binaries=provider_binaries,
        unenforceable=tuple(unenforceable),
        placeholders=compile_placeholders(config.statics, config.secrets),
    )


def binary_paths(config: EffectiveConfig) -> frozenset[str]:
    """Every path named in a ``binaries`` list of ``config``."""
    return frozenset(path for entry in config.policy.network for path in entry.binaries)


def authorize(
    config: EffectiveConfig | CompiledPolicy,
    *,
    method: str,
    host: str,
    port: int,
    path: str | None,
    scheme: Scheme,
    header_names: Iterable[str] = (),
    program: Program | None = None,
) -> Decision:
    """One decision; compiles ``config`` first when given an :class:`EffectiveConfig`
    (convenient for tests and tools; the proxy keeps its compiled policy)."""
    policy = config if isinstance(config, CompiledPolicy) else compile_policy(config)
    return policy.authorize(
        method=method,
        host=host,
        port=port,
        path=path,
        scheme=scheme,
        header_names=header_names,
        program=program,
    )
