"""Every validation rule, one failing and one passing case each (table-driven)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from grantbox.profiles import Diagnostic, Severity, parse_profile, validate_profiles

Doc = dict[str, Any]


def base() -> Doc:
    return {
        "id": "example-api",
        "display_name": "Example API",
        "credentials": [
            {
                "name": "access_token",
                "auth_style": "bearer",
                "token_grant": {
                    "token_endpoint": "https://auth.example.com/realms/demo/protocol/openid-connect/token",
                    "audience": "api",
                    "scopes": ["read"],
                    "audience_overrides": [
                        {"host": "api.example.com", "path": "/admin/**", "audience": "admin"}
                    ],
                },
            }
        ],
        "endpoints": [
            {"host": "api.example.com", "port": 443, "protocol": "rest", "access": "read-only"},
            {"host": "*.files.example.com", "ports": [443, 8443]},
        ],
        "binaries": ["/usr/bin/curl"],
    }


def diagnose(doc: Doc) -> list[Diagnostic]:
    profile, diagnostics = parse_profile(doc, "<test>")
    if profile is not None:
        diagnostics = diagnostics + validate_profiles([profile])
    return diagnostics


def errors(doc: Doc) -> list[Diagnostic]:
    return [d for d in diagnose(doc) if d.severity is Severity.ERROR]


def grant(doc: Doc) -> Doc:
    result: Doc = doc["credentials"][0]["token_grant"]
    return result


def cred(doc: Doc) -> Doc:
    result: Doc = doc["credentials"][0]
    return result


Mutation = Callable[[Doc], None]


def setter(path: str, value: Any) -> Mutation:
    """A mutation that sets ``a.b[0].c`` style paths (creating nothing on the way)."""

    def apply(doc: Doc) -> None:
        target: Any = doc
        parts = path.replace("]", "").replace("[", ".").split(".")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        last = parts[-1]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value

    return apply


def deleter(path: str) -> Mutation:
    def apply(doc: Doc) -> None:
        target: Any = doc
        parts = path.split(".")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[parts[-1]]

    return apply


def both(*mutations: Mutation) -> Mutation:
    def apply(doc: Doc) -> None:
        for mutation in mutations:
            mutation(doc)

    return apply


TG = "credentials[0].token_grant"

# (rule, failing mutation, field expected, message fragment, passing mutation)
RULES: list[tuple[str, Mutation, str, str, Mutation]] = [
    (
        "profile id is kebab-case",
        setter("id", "Example_API"),
        "id",
        "kebab-case",
        setter("id", "example-api-2"),
    ),
    (
        "unknown top-level key",
        setter("colour", "blue"),
        "colour",
        "unknown field",
        setter("category", "blue"),
    ),
    (
        "unknown key in a grant",
        setter(f"{TG}.client_secret".replace("[0]", ".0"), "x"),
        f"{TG}.client_secret",
        "unknown field",
        setter(f"{TG}.audience".replace("[0]", ".0"), "other"),
    ),
    (
        "unknown enum value is an error, not a default",
        setter("endpoints.0.tls", "none"),
        "endpoints[0].tls",
        "unknown value 'none'",
        setter("endpoints.0.tls", "auto"),
    ),
    (
        "unknown enforcement",
        setter("endpoints.0.enforcement", "warn"),
        "endpoints[0].enforcement",
        "unknown value",
        setter("endpoints.0.enforcement", "audit"),
    ),
    (
        "unknown assertion type",
        setter("credentials.0.token_grant.client_assertion_type", "urn:x"),
        f"{TG}.client_assertion_type",
        "unknown value",
        setter(
            "credentials.0.token_grant.client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
        ),
    ),
    (
        "token endpoint must be absolute",
        setter("credentials.0.token_grant.token_endpoint", "/realms/demo/token"),
        f"{TG}.token_endpoint",
        "absolute URL",
        setter("credentials.0.token_grant.token_endpoint", "https://auth.example.com/token"),
    ),
    (
        "token endpoint must be https off loopback",
        setter("credentials.0.token_grant.token_endpoint", "http://auth.example.com/token"),
        f"{TG}.token_endpoint",
        "must use https",
        setter("credentials.0.token_grant.token_endpoint", "http://127.0.0.1:8180/token"),
    ),
    (
        "http allowed for in-cluster services only with the exact shape",
        setter(
            "credentials.0.token_grant.token_endpoint",
            "http://token-issuer.default.svc.evil.com/token",
        ),
        f"{TG}.token_endpoint",
        "must use https",
        setter(
            "credentials.0.token_grant.token_endpoint",
            "http://token-issuer.default.svc.cluster.local/token",
        ),
    ),
    (
        "other schemes are refused",
        setter("credentials.0.token_grant.token_endpoint", "ftp://auth.example.com/token"),
        f"{TG}.token_endpoint",
        "must use https",
        setter("credentials.0.token_grant.token_endpoint", "http://[::1]:8080/token"),
    ),
    (
        "no credentials in the token endpoint URL",
        setter("credentials.0.token_grant.token_endpoint", "https://u:p@auth.example.com/t"),
        f"{TG}.token_endpoint",
        "credentials in the URL",
        setter("credentials.0.token_grant.token_endpoint", "https://auth.example.com/t"),
    ),
    (
        "grants only support bearer or header",
        setter("credentials.0.auth_style", "query"),
        "credentials[0].auth_style",
        "bearer or header",
        both(
            setter("credentials.0.auth_style", "header"),
            setter("credentials.0.header_name", "X-Token"),
        ),
    ),
    (
        "header style needs a header name",
        setter("credentials.0.auth_style", "header"),
        "credentials[0].header_name",
        "header_name is required",
        both(
            setter("credentials.0.auth_style", "header"),
            setter("credentials.0.header_name", "X-Api-Key"),
        ),
    ),
    (
        "header names must be tokens",
        setter("credentials.0.header_name", "X Token"),
        "credentials[0].header_name",
        "not a valid HTTP header name",
        setter("credentials.0.header_name", "X-Token"),
    ),
    *[
        (
            f"framing header {name} refused",
            setter("credentials.0.header_name", name),
            "credentials[0].header_name",
            "frames the message or connection",
            setter("credentials.0.header_name", "Authorization"),
        )
        for name in (
            "Host",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Upgrade",
            "TE",
            "Trailer",
            "Keep-Alive",
            "Proxy-Authorization",
            "Proxy-Connection",
        )
    ],
    (
        "scopes may not contain whitespace",
        setter("credentials.0.token_grant.scopes", ["read write"]),
        f"{TG}.scopes[0]",
        "whitespace",
        setter("credentials.0.token_grant.scopes", ["read", "write"]),
    ),
    (
        "scopes may not be empty",
        setter("credentials.0.token_grant.scopes", ["read", ""]),
        f"{TG}.scopes[1]",
        "must not be empty",
        setter("credentials.0.token_grant.scopes", ["read"]),
    ),
    (
        "override scopes follow the same rule",
        setter("credentials.0.token_grant.audience_overrides.0.scopes", ["a\tb"]),
        f"{TG}.audience_overrides[0].scopes[0]",
        "whitespace",
        setter("credentials.0.token_grant.audience_overrides.0.scopes", ["admin"]),
    ),
    (
        "negative TTL",
        setter("credentials.0.token_grant.cache_ttl_seconds", -1),
        f"{TG}.cache_ttl_seconds",
        "greater than or equal to 0",
        setter("credentials.0.token_grant.cache_ttl_seconds", 60),
    ),
    (
        "endpoint port out of range",
        setter("endpoints.0.port", 65536),
        "endpoints[0].port",
        "less than or equal to 65535",
        setter("endpoints.0.port", 65535),
    ),
    (
        "endpoint port zero",
        setter("endpoints.0.port", 0),
        "endpoints[0].port",
        "greater than or equal to 1",
        setter("endpoints.0.port", 1),
    ),
    (
        "ports list out of range",
        setter("endpoints.1.ports", [443, 70000]),
        "endpoints[1].ports[1]",
        "less than or equal to 65535",
        setter("endpoints.1.ports", [443, 8080]),
    ),
    (
        "override port out of range",
        setter("credentials.0.token_grant.audience_overrides.0.port", 65536),
        f"{TG}.audience_overrides[0].port",
        "less than or equal to 65535",
        setter("credentials.0.token_grant.audience_overrides.0.port", 443),
    ),
    (
        "endpoint without a usable port",
        deleter("endpoints.0.port"),
        "endpoints[0].port",
        "no usable port",
        both(deleter("endpoints.0.port"), setter("endpoints.0.ports", [443])),
    ),
    (
        "duplicate credential names",
        lambda doc: doc["credentials"].append({"name": "access_token", "auth_style": "basic"}),
        "credentials[1].name",
        "already used",
        lambda doc: doc["credentials"].append({"name": "password"}),
    ),
    (
        "override that matches no endpoint (host)",
        setter("credentials.0.token_grant.audience_overrides.0.host", "other.example.org"),
        f"{TG}.audience_overrides[0]",
        "matches none of the profile's endpoints",
        setter("credentials.0.token_grant.audience_overrides.0.host", "x.files.example.com"),
    ),
    (
        "override that matches no endpoint (port)",
        setter("credentials.0.token_grant.audience_overrides.0.port", 8080),
        f"{TG}.audience_overrides[0]",
        "matches none of the profile's endpoints",
        setter("credentials.0.token_grant.audience_overrides.0.port", 443),
    ),
    (
        "override that matches no endpoint (path)",
        both(
            setter("endpoints.0.path", "/v1/**"),
            setter("endpoints.1.path", "/v1/**"),
            setter("credentials.0.token_grant.audience_overrides.0.path", "/v2/**"),
        ),
        f"{TG}.audience_overrides[0]",
        "matches none of the profile's endpoints",
        both(
            setter("endpoints.0.path", "/v1/**"),
            setter("credentials.0.token_grant.audience_overrides.0.path", "/v1/admin/**"),
        ),
    ),
    (
        "overlapping overrides of equal specificity",
        lambda doc: grant(doc)["audience_overrides"].append(
            {"host": "api.example.com", "path": "/admin/**", "audience": "other"}
        ),
        f"{TG}.audience_overrides[1]",
        "ambiguous audience_overrides at indexes 0 and 1",
        lambda doc: grant(doc)["audience_overrides"].append(
            {"host": "api.example.com", "path": "/admin/users/**", "audience": "other"}
        ),
    ),
    (
        "an override with no selector and one naming the only host tie",
        both(
            setter("endpoints", [{"host": "api.example.com", "port": 443, "path": "/v1/**"}]),
            setter(
                "credentials.0.token_grant.audience_overrides",
                [{"audience": "a"}, {"host": "api.example.com", "audience": "b"}],
            ),
        ),
        f"{TG}.audience_overrides[1]",
        "indexes 0 and 1",
        both(
            setter("endpoints", [{"host": "api.example.com", "port": 443, "path": "/v1/**"}]),
            setter(
                "credentials.0.token_grant.audience_overrides",
                [{"audience": "a"}, {"host": "api.example.com", "path": "/v1/x", "audience": "b"}],
            ),
        ),
    ),
    (
        "two grant credentials bound to the same endpoints",
        lambda doc: doc["credentials"].append(
            {"name": "second", "token_grant": {"token_endpoint": "https://auth.example.com/t"}}
        ),
        "credentials[1].token_grant",
        "both grant tokens",
        # Several grants on one request: each in its own header.
        lambda doc: doc["credentials"].append(
            {
                "name": "second",
                "auth_style": "header",
                "header_name": "X-Second",
                "token_grant": {"token_endpoint": "https://auth.example.com/t"},
            }
        ),
    ),
    (
        "token grant on a tls: skip endpoint",
        setter("endpoints.1.tls", "skip"),
        "endpoints[1].tls",
        "never receive a token",
        setter("endpoints.1.tls", "auto"),
    ),
    (
        "tls: skip cannot have L7 rules",
        both(deleter("credentials.0.token_grant"), setter("endpoints.0.tls", "skip")),
        "endpoints[0].tls",
        "raw tunnel",
        both(
            deleter("credentials.0.token_grant"),
            setter("endpoints.1.tls", "skip"),
        ),
    ),
    (
        "access and rules are exclusive",
        setter("endpoints.0.rules", [{"method": "GET", "path": "/v1/**"}]),
        "endpoints[0].rules",
        "either access or rules",
        both(
            deleter("endpoints.0.access"),
            setter("endpoints.0.rules", [{"method": "GET", "path": "/v1/**"}]),
        ),
    ),
    (
        "L7 rules need protocol rest",
        deleter("endpoints.0.protocol"),
        "endpoints[0].protocol",
        "protocol: rest",
        deleter("endpoints.0.access"),
    ),
    (
        "rule methods are HTTP tokens",
        both(deleter("endpoints.0.access"), setter("endpoints.0.rules", [{"method": "GE T"}])),
        "endpoints[0].rules[0].method",
        "not an HTTP method",
        both(deleter("endpoints.0.access"), setter("endpoints.0.rules", [{"method": "post"}])),
    ),
    (
        "rule paths are valid patterns",
        both(deleter("endpoints.0.access"), setter("endpoints.0.rules", [{"path": "v1"}])),
        "endpoints[0].rules[0].path",
        "must start with '/'",
        both(deleter("endpoints.0.access"), setter("endpoints.0.rules", [{"path": "/v1/*"}])),
    ),
    (
        "endpoint host pattern",
        setter("endpoints.0.host", "api*.example.com"),
        "endpoints[0].host",
        "whole labels",
        setter("endpoints.0.host", "*.example.com"),
    ),
    (
        "endpoint path pattern",
        setter("endpoints.0.path", "/v1/**/x"),
        "endpoints[0].path",
        "last segment",
        setter("endpoints.0.path", "/admin/*/x"),
    ),
    (
        "override host pattern",
        setter("credentials.0.token_grant.audience_overrides.0.host", "a..example.com"),
        f"{TG}.audience_overrides[0].host",
        "empty label",
        setter("credentials.0.token_grant.audience_overrides.0.host", "*.example.com"),
    ),
    (
        "allowed_ips are addresses or networks",
        setter("endpoints.0.allowed_ips", ["10.0.0.300"]),
        "endpoints[0].allowed_ips[0]",
        "not an IP address",
        setter("endpoints.0.allowed_ips", ["10.0.0.0/8", "127.0.0.1", "::1"]),
    ),
    (
        "link-local and metadata addresses are never allowed",
        setter("endpoints.0.allowed_ips", ["169.254.169.254"]),
        "endpoints[0].allowed_ips[0]",
        "link-local",
        setter("endpoints.0.allowed_ips", ["192.168.1.10"]),
    ),
    (
        "binaries are absolute paths",
        setter("binaries", ["curl"]),
        "binaries[0]",
        "absolute path",
        setter("binaries", ["/usr/local/bin/curl"]),
    ),
    (
        "svid audience has no whitespace",
        setter("credentials.0.token_grant.jwt_svid_audience", "https://a b"),
        f"{TG}.jwt_svid_audience",
        "whitespace",
        setter("credentials.0.token_grant.jwt_svid_audience", "https://auth.example.com"),
    ),
    (
        "query auth style needs a parameter",
        lambda doc: doc["credentials"].append({"name": "key", "auth_style": "query"}),
        "credentials[1].query_param",
        "query_param is required",
        lambda doc: doc["credentials"].append(
            {"name": "key", "auth_style": "query", "query_param": "api_key"}
        ),
    ),
    (
        "required fields are required",
        deleter("credentials.0.token_grant.token_endpoint"),
        f"{TG}.token_endpoint",
        "required field is missing",
        setter("credentials.0.token_grant.token_endpoint", "https://auth.example.com/t"),
    ),
]


def test_the_base_profile_is_clean() -> None:
    assert diagnose(base()) == []


@pytest.mark.parametrize(
    ("mutation", "field", "fragment"),
    [pytest.param(m, f, frag, id=rule) for rule, m, f, frag, _ in RULES],
)
def test_rule_rejects(mutation: Mutation, field: str, fragment: str) -> None:
    doc = base()
    mutation(doc)
    found = errors(doc)
    matching = [d for d in found if d.field == field and fragment in d.message]
    assert matching, f"expected an error at {field} mentioning {fragment!r}, got {found}"
    assert all(d.profile for d in found)


@pytest.mark.parametrize("mutation", [pytest.param(p, id=rule) for rule, _, _, _, p in RULES])
def test_rule_accepts(mutation: Mutation) -> None:
    doc = base()
    mutation(doc)
    assert errors(doc) == []


def test_diagnostics_name_the_profile_even_when_structure_is_broken() -> None:
    doc = base()
    doc["endpoints"][0]["port"] = "https"
    (diagnostic,) = errors(doc)
    assert diagnostic.profile == "example-api"
    assert diagnostic.field == "endpoints[0].port"


def test_a_repeated_profile_id_in_one_set_is_an_error() -> None:
    first, _ = parse_profile(base(), "a")
    second, _ = parse_profile(copy.deepcopy(base()), "b")
    assert first is not None and second is not None
    found = validate_profiles([first, second])
    assert [d.field for d in found] == ["id"]


def test_an_override_that_changes_nothing_is_a_warning() -> None:
    doc = base()
    grant(doc)["audience_overrides"][0] = {"host": "api.example.com", "path": "/admin/**"}
    found = diagnose(doc)
    assert [d.severity for d in found] == [Severity.WARNING]


def test_runtime_credentials_need_every_required_credential_to_be_a_grant() -> None:
    profile, _ = parse_profile(base(), "<t>")
    assert profile is not None and profile.allows_runtime_credentials
    doc = base()
    doc["credentials"].append({"name": "password", "auth_style": "basic", "required": True})
    profile, _ = parse_profile(doc, "<t>")
    assert profile is not None and not profile.allows_runtime_credentials
    doc = base()
    cred(doc)["token_grant"] = None
    profile, _ = parse_profile(doc, "<t>")
    assert profile is not None and not profile.allows_runtime_credentials
