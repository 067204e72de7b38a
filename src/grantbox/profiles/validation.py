"""Semantic validation of profiles: every rule of DESIGN §3.1 and the foundation issue.

Each rule is a small function that yields diagnostics with the profile id, the field path
and a reason that says what to change. The same function backs ``grantbox profile lint``,
the gateway's import and update, and built-in profile checks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence

from .ambiguity import find_collisions
from .bindings import GrantBinding, credential_candidates, resolve_candidates
from .diagnostics import Diagnostic, Severity
from .effective import PROVIDER_ENTRY_PREFIX, SandboxPolicy
from .grant_kinds import grant_kind_problems
from .headers import header_name_problem
from .isolation import filesystem_problems, limits_problems
from .model import AuthStyle, Credential, Endpoint, Profile, TlsMode
from .patterns import (
    PatternError,
    host_intersection,
    parse_host_pattern,
    parse_path_pattern,
    path_intersection,
)
from .static import env_name_problem, static_credential_bindings
from .token_endpoint import svid_audience_problem, token_endpoint_problem

PROFILE_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
HTTP_METHOD = re.compile(r"\*|[!#$%&'*+\-.^_`|~0-9A-Z]+")
MAX_ID_LENGTH = 63


def _error(profile: Profile, field: str, message: str) -> Diagnostic:
    return Diagnostic(profile.id, field, message)


def _warning(profile: Profile, field: str, message: str) -> Diagnostic:
    return Diagnostic(profile.id, field, message, Severity.WARNING)


def _check_identity(profile: Profile) -> Iterator[Diagnostic]:
    if not PROFILE_ID.fullmatch(profile.id) or len(profile.id) > MAX_ID_LENGTH:
        yield _error(
            profile,
            "id",
            f"profile id '{profile.id}' must be lowercase kebab-case "
            f"(a-z, 0-9 and single hyphens, at most {MAX_ID_LENGTH} characters)",
        )
    for index, binary in enumerate(profile.binaries):
        if not binary.startswith("/"):
            yield _error(profile, f"binaries[{index}]", f"'{binary}' must be an absolute path")


def _check_scopes(profile: Profile, field: str, scopes: Sequence[str]) -> Iterator[Diagnostic]:
    seen: set[str] = set()
    for index, scope in enumerate(scopes):
        if not scope:
            yield _error(profile, f"{field}[{index}]", "scope must not be empty")
        elif any(ch.isspace() for ch in scope) or not scope.isprintable():
            yield _error(
                profile,
                f"{field}[{index}]",
                f"scope '{scope}' must not contain whitespace or control characters; "
                "list each scope separately",
            )
        elif scope in seen:
            yield _warning(profile, f"{field}[{index}]", f"scope '{scope}' is listed twice")
        seen.add(scope)


def _check_placement(profile: Profile, index: int, credential: Credential) -> Iterator[Diagnostic]:
    base = f"credentials[{index}]"
    style = credential.auth_style
    grant = credential.token_grant is not None
    if grant and style not in (None, AuthStyle.BEARER, AuthStyle.HEADER):
        yield _error(
            profile,
            f"{base}.auth_style",
            f"token_grant credentials support auth_style bearer or header, not '{style}'",
        )
        return
    if style is AuthStyle.HEADER and not credential.header_name.strip():
        yield _error(
            profile, f"{base}.header_name", "header_name is required for auth_style header"
        )
    elif style is AuthStyle.QUERY and not credential.query_param.strip():
        yield _error(profile, f"{base}.query_param", "query_param is required for auth_style query")
    if credential.header_name:
        if style is AuthStyle.QUERY or (style is None and not grant):
            yield _error(
                profile,
                f"{base}.header_name",
                "header_name needs auth_style bearer, header or basic to place the credential",
            )
        else:
            problem = header_name_problem(credential.header_name)
            if problem:
                yield _error(profile, f"{base}.header_name", problem)
    if credential.query_param and style is not AuthStyle.QUERY:
        yield _error(profile, f"{base}.query_param", "query_param only applies to auth_style query")
    if grant and credential.env_var:
        yield _error(
            profile,
            f"{base}.env_var",
            "env_var is for stored credentials; a token_grant credential never reaches the "
            "agent, not even as a placeholder",
        )
    elif credential.is_static:
        problem = env_name_problem(credential.placeholder_variable)
        if problem:
            field = f"{base}.env_var" if credential.env_var else f"{base}.name"
            yield _error(
                profile,
                field,
                f"the placeholder variable {problem}; set env_var to another name",
            )


def _check_grant(profile: Profile, index: int, credential: Credential) -> Iterator[Diagnostic]:
    grant = credential.token_grant
    if grant is None:
        return
    base = f"credentials[{index}].token_grant"
    problem = token_endpoint_problem(grant.token_endpoint)
    if problem:
        yield _error(profile, f"{base}.token_endpoint", problem)
    if grant.jwt_svid_audience != grant.jwt_svid_audience.strip() or any(
        ch.isspace() for ch in grant.jwt_svid_audience
    ):
        yield _error(
            profile, f"{base}.jwt_svid_audience", "jwt_svid_audience must not contain whitespace"
        )
    elif not problem:
        mismatch = svid_audience_problem(grant.jwt_svid_audience, grant.token_endpoint)
        if mismatch:
            yield _error(profile, f"{base}.jwt_svid_audience", mismatch)
    if any(ch.isspace() for ch in grant.audience):
        yield _error(profile, f"{base}.audience", "audience must not contain whitespace")
    yield from _check_scopes(profile, f"{base}.scopes", grant.scopes)
    if not profile.endpoints:
        yield _warning(profile, base, "the profile has no endpoints, so this grant is never used")
    for o_index, override in enumerate(grant.audience_overrides):
        field = f"{base}.audience_overrides[{o_index}]"
        host = path = None
        if override.host:
            try:
                host = parse_host_pattern(override.host)
            except PatternError as exc:
                yield _error(profile, f"{field}.host", str(exc))
                continue
        if override.path:
            try:
                path = parse_path_pattern(override.path)
            except PatternError as exc:
                yield _error(profile, f"{field}.path", str(exc))
                continue
        if any(ch.isspace() for ch in override.audience):
            yield _error(profile, f"{field}.audience", "audience must not contain whitespace")
        yield from _check_scopes(profile, f"{field}.scopes", override.scopes)
        if not override.audience and not override.scopes and not override.resource:
            yield _warning(
                profile,
                field,
                "override sets neither audience, scopes nor resource, so it changes nothing",
            )
        if not _override_applies(profile.endpoints, host, override.port, path):
            yield _error(
                profile,
                field,
                "override matches none of the profile's endpoints (host, port and path must "
                "each meet an endpoint); fix the selector or remove the override",
            )


def _override_applies(endpoints: Sequence[Endpoint], host: object, port: int, path: object) -> bool:
    for endpoint in endpoints:
        try:
            e_host = parse_host_pattern(endpoint.host)
            e_path = parse_path_pattern(endpoint.path)
        except PatternError:
            continue
        if port and port not in endpoint.all_ports:
            continue
        if host is not None and host_intersection(e_host, host) is None:  # type: ignore[arg-type]
            continue
        if path is not None and path_intersection(e_path, path) is None:  # type: ignore[arg-type]
            continue
        if endpoint.all_ports:
            return True
    return False


def _check_endpoint(
    label: str,
    base: str,
    endpoint: Endpoint,
    grant_credentials: Sequence[tuple[int, Credential]] = (),
    static_credentials: Sequence[tuple[int, Credential]] | None = None,
) -> Iterator[Diagnostic]:
    """Rules for one endpoint, whether it sits in a profile or in a sandbox policy
    (``static_credentials`` is None there: a policy holds no credentials)."""
    try:
        parse_host_pattern(endpoint.host)
    except PatternError as exc:
        yield Diagnostic(label, f"{base}.host", str(exc))
    try:
        parse_path_pattern(endpoint.path)
    except PatternError as exc:
        yield Diagnostic(label, f"{base}.path", str(exc))
    if not endpoint.all_ports:
        yield Diagnostic(label, f"{base}.port", "endpoint has no usable port; set port or ports")
    if endpoint.access is not None and endpoint.rules:
        yield Diagnostic(label, f"{base}.rules", "set either access or rules, not both")
    if (endpoint.access is not None or endpoint.rules) and endpoint.protocol is None:
        yield Diagnostic(
            label, f"{base}.protocol", "access and rules are HTTP rules; they need protocol: rest"
        )
    if endpoint.tls is TlsMode.SKIP and endpoint.protocol is not None:
        yield Diagnostic(
            label,
            f"{base}.tls",
            "tls: skip is a raw tunnel the proxy cannot read, so protocol: rest cannot apply",
        )
    for r_index, rule in enumerate(endpoint.rules):
        if not HTTP_METHOD.fullmatch(rule.method):
            yield Diagnostic(
                label, f"{base}.rules[{r_index}].method", f"'{rule.method}' is not an HTTP method"
            )
        try:
            parse_path_pattern(rule.path)
        except PatternError as exc:
            yield Diagnostic(label, f"{base}.rules[{r_index}].path", str(exc))
    for a_index, value in enumerate(endpoint.allowed_ips):
        field = f"{base}.allowed_ips[{a_index}]"
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            yield Diagnostic(label, field, f"'{value}' is not an IP address or CIDR network")
            continue
        if network.is_link_local or network.overlaps(ipaddress.ip_network("169.254.0.0/16")):
            yield Diagnostic(
                label,
                field,
                f"'{value}' is link-local; the proxy always refuses link-local and "
                "metadata addresses",
            )
    if endpoint.tls is TlsMode.SKIP:
        for c_index, credential in grant_credentials:
            yield Diagnostic(
                label,
                f"{base}.tls",
                f"credential '{credential.name}' (credentials[{c_index}]) has a token_grant, but "
                "tls: skip endpoints are raw tunnels that never receive a token; use tls: auto",
            )
        for c_index, credential in static_credentials or ():
            yield Diagnostic(
                label,
                f"{base}.tls",
                f"credential '{credential.name}' (credentials[{c_index}]) is stored, but "
                "tls: skip endpoints are raw tunnels where its placeholder is never replaced; "
                "use tls: auto if it is meant for this endpoint",
                Severity.WARNING,
            )
    if endpoint.credential_body_rewrite:
        if static_credentials is None:
            yield Diagnostic(
                label,
                f"{base}.credential_body_rewrite",
                "credential_body_rewrite only applies to provider profile endpoints",
            )
        elif not static_credentials:
            yield Diagnostic(
                label,
                f"{base}.credential_body_rewrite",
                "the profile has no stored credential whose placeholder a body could carry",
            )
        elif endpoint.tls is TlsMode.SKIP:
            yield Diagnostic(
                label,
                f"{base}.credential_body_rewrite",
                "a tls: skip endpoint is never read, so its bodies cannot be rewritten",
            )


def _check_credentials(profile: Profile) -> Iterator[Diagnostic]:
    first_index: dict[str, int] = {}
    variables: dict[str, int] = {}
    for index, credential in enumerate(profile.credentials):
        if not CREDENTIAL_NAME.fullmatch(credential.name):
            yield _error(
                profile,
                f"credentials[{index}].name",
                f"credential name '{credential.name}' must start with a letter or digit and "
                "hold only letters, digits, '_', '.' and '-'",
            )
        if credential.name in first_index:
            yield _error(
                profile,
                f"credentials[{index}].name",
                f"credential name '{credential.name}' is already used by "
                f"credentials[{first_index[credential.name]}]",
            )
        first_index.setdefault(credential.name, index)
        if credential.is_static:
            variable = credential.placeholder_variable
            if variable in variables:
                yield _error(
                    profile,
                    f"credentials[{index}].env_var",
                    f"${variable} already holds the placeholder of "
                    f"credentials[{variables[variable]}]; give each credential its own env_var",
                )
            variables.setdefault(variable, index)
        yield from _check_placement(profile, index, credential)
        yield from _check_grant(profile, index, credential)
        yield from grant_kind_problems(profile, index, credential)


def _patterns_valid(profile: Profile) -> bool:
    try:
        for endpoint in profile.endpoints:
            parse_host_pattern(endpoint.host)
            parse_path_pattern(endpoint.path)
        for _, credential in profile.grant_credentials:
            assert credential.token_grant is not None
            for override in credential.token_grant.audience_overrides:
                if override.host:
                    parse_host_pattern(override.host)
                if override.path:
                    parse_path_pattern(override.path)
    except PatternError:
        return False
    return True


def _check_ambiguity(profile: Profile) -> Iterator[Diagnostic]:
    """Overrides of one credential that tie, and credentials of one profile that tie."""
    if not _patterns_valid(profile):
        return
    resolved = []
    for c_index, credential in profile.grant_credentials:
        candidates = credential_candidates(profile.id, profile, credential)
        by_selector: dict[tuple[str, int, str], int] = {}
        reported: set[tuple[int, int]] = set()
        for candidate in candidates:
            if candidate.override_index is None:
                continue
            selector = candidate.binding.selector
            first = by_selector.setdefault(selector, candidate.override_index)
            pair = (first, candidate.override_index)
            if first != candidate.override_index and pair not in reported:
                reported.add(pair)
                binding = candidate.binding
                yield _error(
                    profile,
                    f"credentials[{c_index}].token_grant.audience_overrides[{candidate.override_index}]",
                    f"credential '{credential.name}' has ambiguous audience_overrides at indexes "
                    f"{first} and {candidate.override_index} for {binding.host}:{binding.port} "
                    f"path '{binding.path or '/**'}'; make one selector more specific or "
                    "merge them",
                )
        resolved.extend(resolve_candidates(candidates))
    statics = []
    for _, credential in profile.static_credentials:
        statics.extend(static_credential_bindings(profile.id, profile, credential))
    indexes = {c.name: i for i, c in enumerate(profile.credentials)}
    for collision in find_collisions(resolved, statics):
        second = profile.credentials[indexes[collision.second.credential]]
        grants = isinstance(collision.first, GrantBinding) and second.token_grant is not None
        what = "both grant tokens" if grants else "are both placed"
        yield _error(
            profile,
            f"credentials[{indexes[second.name]}]."
            + ("token_grant" if second.token_grant is not None else "auth_style"),
            f"credentials '{collision.first.credential}' and '{second.name}' {what} in "
            f"{collision.place} for {collision.where}; a request there would have two "
            "candidates. Place one in another header, give a token grant audience_overrides "
            "that narrow it, or split the profile",
        )


def validate_profile(profile: Profile) -> list[Diagnostic]:
    """Every diagnostic for one structurally valid profile, errors and warnings."""
    diagnostics: list[Diagnostic] = []
    diagnostics.extend(_check_identity(profile))
    diagnostics.extend(_check_credentials(profile))
    for index, endpoint in enumerate(profile.endpoints):
        diagnostics.extend(
            _check_endpoint(
                profile.id,
                f"endpoints[{index}]",
                endpoint,
                profile.grant_credentials,
                profile.static_credentials,
            )
        )
    diagnostics.extend(_check_ambiguity(profile))
    return diagnostics


def validate_profiles(profiles: Iterable[Profile]) -> list[Diagnostic]:
    """Validate a set: each profile on its own, plus ids that repeat within the set."""
    diagnostics: list[Diagnostic] = []
    seen: set[str] = set()
    for profile in profiles:
        if profile.id in seen:
            diagnostics.append(
                _error(
                    profile, "id", f"profile id '{profile.id}' appears more than once in this set"
                )
            )
        seen.add(profile.id)
        diagnostics.extend(validate_profile(profile))
    return diagnostics


def validate_policy(policy: SandboxPolicy, label: str = "policy") -> list[Diagnostic]:
    """Validate a sandbox network policy with the same endpoint rules profiles obey."""
    diagnostics: list[Diagnostic] = []
    seen: dict[str, int] = {}
    for e_index, entry in enumerate(policy.network):
        base = f"network[{e_index}]"
        if entry.name in seen:
            diagnostics.append(
                Diagnostic(label, f"{base}.name", f"entry name '{entry.name}' is used twice")
            )
        seen.setdefault(entry.name, e_index)
        if entry.name.startswith(PROVIDER_ENTRY_PREFIX):
            diagnostics.append(
                Diagnostic(
                    label,
                    f"{base}.name",
                    f"names starting with '{PROVIDER_ENTRY_PREFIX}' are reserved for providers",
                )
            )
        for index, binary in enumerate(entry.binaries):
            if not binary.startswith("/"):
                diagnostics.append(
                    Diagnostic(label, f"{base}.binaries[{index}]", f"'{binary}' must be absolute")
                )
        for index, endpoint in enumerate(entry.endpoints):
            diagnostics.extend(_check_endpoint(label, f"{base}.endpoints[{index}]", endpoint))
    for field, reason in filesystem_problems(policy.filesystem):
        diagnostics.append(Diagnostic(label, f"filesystem.{field}".rstrip("."), reason))
    for field, reason in limits_problems(policy.limits):
        diagnostics.append(Diagnostic(label, f"limits.{field}", reason))
    return diagnostics
