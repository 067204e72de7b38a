"""Grant kinds in profiles: token exchange, mutual-TLS client auth, resource indicators,
requested token types, client ids and a token endpoint's own CA — lint rules (one failing
and one passing case each), the JSON Schema, and what reaches the bindings."""

from __future__ import annotations

from typing import Any

import pytest
import trustme

from grantbox.profiles import (
    ACCESS_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    ClientAuth,
    Diagnostic,
    GrantBinding,
    GrantType,
    Severity,
    expand_bindings,
    parse_ca_pem,
    parse_profile,
    profile_json_schema,
    validate_profiles,
)

Doc = dict[str, Any]
TG = "credentials[0].token_grant"
ENDPOINT = "https://sts.example.com/v1/token"
CA_PEM = trustme.CA().cert_pem.bytes().decode()


def document(**grant: Any) -> Doc:
    token_grant: Doc = {"token_endpoint": ENDPOINT, "audience": "api"}
    token_grant.update(grant)
    return {
        "id": "exchange-api",
        "credentials": [{"name": "token", "auth_style": "bearer", "token_grant": token_grant}],
        "endpoints": [{"host": "api.example.com", "port": 443}],
    }


def diagnose(doc: Doc) -> list[Diagnostic]:
    profile, diagnostics = parse_profile(doc, "<test>")
    if profile is not None:
        diagnostics = diagnostics + validate_profiles([profile])
    return diagnostics


def errors(doc: Doc) -> list[tuple[str, str]]:
    return [(d.field, d.message) for d in diagnose(doc) if d.severity is Severity.ERROR]


def bindings(doc: Doc) -> list[GrantBinding]:
    profile, problems = parse_profile(doc, "<test>")
    assert profile is not None, problems
    return list(expand_bindings([("p", profile)]))


# (case, grant fields, field of the expected error, fragment of its message)
REFUSED: list[tuple[str, Doc, str, str]] = [
    ("unknown grant type", {"grant_type": "password"}, f"{TG}.grant_type", "unknown value"),
    (
        "grant type spelled as the URN",
        {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange"},
        f"{TG}.grant_type",
        "unknown value",
    ),
    ("unknown client auth", {"client_auth": "client_secret_basic"}, f"{TG}.client_auth", "unknown"),
    (
        "client_credentials without client authentication",
        {"client_auth": "none"},
        f"{TG}.client_auth",
        "client_credentials needs client authentication",
    ),
    (
        "requested token type on client_credentials",
        {"requested_token_type": ACCESS_TOKEN_TYPE},
        f"{TG}.requested_token_type",
        "only to grant_type token_exchange",
    ),
    (
        "unknown requested token type",
        {"grant_type": "token_exchange", "requested_token_type": "urn:x:token-type:saml2"},
        f"{TG}.requested_token_type",
        "unknown value",
    ),
    (
        "refresh tokens cannot be presented",
        {
            "grant_type": "token_exchange",
            "requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token",
        },
        f"{TG}.requested_token_type",
        "unknown value",
    ),
    (
        "assertion type with mutual TLS",
        {
            "client_auth": "tls_client_auth",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        },
        f"{TG}.client_assertion_type",
        "only to client_auth jwt_svid",
    ),
    (
        "assertion type on an unauthenticated exchange",
        {
            "grant_type": "token_exchange",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
        },
        f"{TG}.client_assertion_type",
        "not 'none'",
    ),
    (
        "svid audience where no JWT-SVID is sent",
        {"client_auth": "self_signed_tls_client_auth", "jwt_svid_audience": ENDPOINT},
        f"{TG}.jwt_svid_audience",
        "no JWT-SVID is sent",
    ),
    (
        "mutual TLS to a cleartext endpoint",
        {"client_auth": "tls_client_auth", "token_endpoint": "http://127.0.0.1:8080/token"},
        f"{TG}.client_auth",
        "must be https",
    ),
    (
        "resource given as one string",
        {"resource": "https://api.example.com/"},
        f"{TG}.resource",
        "expected a list",
    ),
    ("relative resource", {"resource": ["/v1/api"]}, f"{TG}.resource[0]", "absolute http(s) URL"),
    (
        "resource URN",
        {"resource": ["urn:example:api"]},
        f"{TG}.resource[0]",
        "absolute http(s) URL",
    ),
    (
        "resource with a fragment",
        {"resource": ["https://api.example.com/#x"]},
        f"{TG}.resource[0]",
        "fragment",
    ),
    (
        "empty fragment",
        {"resource": ["https://api.example.com/#"]},
        f"{TG}.resource[0]",
        "fragment",
    ),
    (
        "resource with credentials",
        {"resource": ["https://u:p@api.example.com/"]},
        f"{TG}.resource[0]",
        "credentials",
    ),
    (
        "resource with whitespace",
        {"resource": ["https://api.example.com/ x"]},
        f"{TG}.resource[0]",
        "whitespace",
    ),
    (
        "resource with a bad port",
        {"resource": ["https://api.example.com:99999/"]},
        f"{TG}.resource[0]",
        "not a valid URL",
    ),
    (
        "override resource is checked too",
        {
            "audience_overrides": [
                {"host": "api.example.com", "resource": ["ftp://files.example.com/"]}
            ]
        },
        f"{TG}.audience_overrides[0].resource[0]",
        "absolute http(s) URL",
    ),
    ("client id with whitespace", {"client_id": "my client"}, f"{TG}.client_id", "whitespace"),
    ("client id with a control character", {"client_id": "id\x00"}, f"{TG}.client_id", "control"),
    ("overlong client id", {"client_id": "x" * 256}, f"{TG}.client_id", "longer than 255"),
    (
        "CA that is not PEM",
        {"token_endpoint_ca": "not a certificate"},
        f"{TG}.token_endpoint_ca",
        "no PEM certificate",
    ),
    (
        "CA with a private key in it",
        {"token_endpoint_ca": CA_PEM + trustme.CA().private_key_pem.bytes().decode()},
        f"{TG}.token_endpoint_ca",
        "only certificates",
    ),
    (
        "CA with trailing text",
        {"token_endpoint_ca": CA_PEM + "and more"},
        f"{TG}.token_endpoint_ca",
        "outside PEM blocks",
    ),
    (
        "CA whose base64 is broken",
        {"token_endpoint_ca": CA_PEM.replace(CA_PEM.splitlines()[3], "AAAA", 1)},
        f"{TG}.token_endpoint_ca",
        "cannot be parsed",
    ),
    (
        "CA for a cleartext endpoint",
        {"token_endpoint": "http://127.0.0.1:8080/token", "token_endpoint_ca": CA_PEM},
        f"{TG}.token_endpoint_ca",
        "only to an https token_endpoint",
    ),
    (
        "oversized CA",
        {"token_endpoint_ca": CA_PEM * 200},
        f"{TG}.token_endpoint_ca",
        "larger than 64 KiB",
    ),
]


@pytest.mark.parametrize(
    ("grant", "field", "fragment"), [pytest.param(g, f, m, id=case) for case, g, f, m in REFUSED]
)
def test_refused(grant: Doc, field: str, fragment: str) -> None:
    found = errors(document(**grant))
    assert any(f == field and fragment in m for f, m in found), found


ACCEPTED: list[tuple[str, Doc]] = [
    ("defaults", {}),
    ("token exchange", {"grant_type": "token_exchange"}),
    (
        "token exchange, every field",
        {
            "grant_type": "token_exchange",
            "client_auth": "tls_client_auth",
            "client_id": "gbx-sandboxes",
            "resource": ["https://api.example.com/", "http://api.internal:8080/v1"],
            "requested_token_type": JWT_TOKEN_TYPE,
            "scopes": ["read"],
            "jwt_svid_audience": ENDPOINT,
            "token_endpoint_ca": CA_PEM,
        },
    ),
    (
        "token exchange with a JWT-SVID client assertion",
        {
            "grant_type": "token_exchange",
            "client_auth": "jwt_svid",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
        },
    ),
    ("mutual TLS", {"client_auth": "tls_client_auth"}),
    ("self-signed mutual TLS", {"client_auth": "self_signed_tls_client_auth", "client_id": "c1"}),
    ("client id with an assertion", {"client_id": "6731de76-14a6-49ae-97bc-6eba6914391e"}),
    ("resource on client_credentials (RFC 8707)", {"resource": ["https://api.example.com/"]}),
    (
        "CA bundle of two",
        {"token_endpoint_ca": CA_PEM + "\n" + trustme.CA().cert_pem.bytes().decode()},
    ),
    ("explicit default client auth", {"client_auth": "jwt_svid"}),
    ("explicit null client auth", {"client_auth": None, "grant_type": "token_exchange"}),
]


@pytest.mark.parametrize("grant", [pytest.param(g, id=case) for case, g in ACCEPTED])
def test_accepted(grant: Doc) -> None:
    assert errors(document(**grant)) == []


def test_a_resource_listed_twice_is_a_warning() -> None:
    found = diagnose(document(resource=["https://a.example/", "https://a.example/"]))
    assert [(d.severity, d.field) for d in found] == [(Severity.WARNING, f"{TG}.resource[1]")]


def test_an_override_that_sets_only_a_resource_changes_something() -> None:
    doc = document(
        audience_overrides=[{"host": "api.example.com", "resource": ["https://x.example/"]}]
    )
    assert diagnose(doc) == []


def test_client_auth_default_depends_on_the_grant_type() -> None:
    (credentials,) = bindings(document())
    (exchange,) = bindings(document(grant_type="token_exchange"))
    assert (credentials.grant_type, credentials.client_auth) == ("client_credentials", "jwt_svid")
    assert (exchange.grant_type, exchange.client_auth) == ("token_exchange", "none")


def test_every_new_field_reaches_the_binding_and_overrides_replace_resource() -> None:
    doc = document(
        grant_type="token_exchange",
        client_auth="tls_client_auth",
        client_id="gbx",
        resource=["https://api.example.com/"],
        requested_token_type=ACCESS_TOKEN_TYPE,
        token_endpoint_ca=CA_PEM,
        audience_overrides=[
            {
                "host": "api.example.com",
                "path": "/admin/**",
                "resource": ["https://admin.example.com/"],
            }
        ],
    )
    default, admin = sorted(bindings(doc), key=lambda b: b.path)
    assert default.resource == ("https://api.example.com/",)
    assert admin.resource == ("https://admin.example.com/",)
    for binding in (default, admin):
        assert binding.grant_type == GrantType.TOKEN_EXCHANGE
        assert binding.client_auth == ClientAuth.TLS_CLIENT_AUTH
        assert binding.client_id == "gbx"
        assert binding.requested_token_type == ACCESS_TOKEN_TYPE
        assert binding.token_endpoint_ca == CA_PEM
        assert binding.svid_audience == ENDPOINT  # the subject token's audience
        assert CA_PEM not in repr(binding)
        assert GrantBinding.from_dict(binding.to_dict()) == binding


def test_mutual_tls_client_credentials_mint_no_jwt_svid() -> None:
    (binding,) = bindings(document(client_auth="tls_client_auth"))
    assert binding.svid_audience == ""


def test_bindings_from_an_older_config_keep_working() -> None:
    (binding,) = bindings(document())
    data = binding.to_dict()
    for name in ("grant_type", "client_auth", "client_id", "resource", "requested_token_type"):
        del data[name]
    del data["token_endpoint_ca"]
    assert GrantBinding.from_dict(data) == binding


def test_schema_lists_the_grant_kinds() -> None:
    schema = profile_json_schema()
    grant = schema["$defs"]["TokenGrant"]["properties"]
    definitions = schema["$defs"]
    assert definitions["GrantType"]["enum"] == ["client_credentials", "token_exchange"]
    assert definitions["ClientAuth"]["enum"] == [
        "jwt_svid",
        "tls_client_auth",
        "self_signed_tls_client_auth",
        "none",
    ]
    assert definitions["TokenType"]["enum"] == [ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE]
    for name in ("grant_type", "client_auth", "client_id", "resource", "requested_token_type"):
        assert name in grant
    assert grant["resource"]["type"] == "array"
    assert "description" in grant["token_endpoint_ca"]
    assert "resource" in definitions["AudienceOverride"]["properties"]


def test_parse_ca_pem_returns_every_certificate() -> None:
    other = trustme.CA().cert_pem.bytes().decode()
    assert len(parse_ca_pem(CA_PEM + other)) == 2
