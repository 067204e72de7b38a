"""The JWT-SVID audience must identify the token endpoint it is sent to (issue #12).

An endpoint E given an SVID minted for issuer I can replay it at I. Accepted: empty
(derived), E's origin, or an issuer URL E is served under; everything else is refused at
lint, import, update and sandbox create, naming profile, field path and reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from grantbox.cli import cli
from grantbox.profiles import (
    Severity,
    derive_svid_audience,
    parse_profile,
    validate_profiles,
)
from grantbox.profiles.token_endpoint import svid_audience_problem

KC = "https://kc.example.com/realms/r/protocol/openid-connect/token"
PLAIN = "https://auth.example.com/oauth2/token"
LOOPBACK = "http://127.0.0.1:18080/token"
ROOT = Path(__file__).resolve().parents[2]
FIELD = "credentials[0].token_grant.jwt_svid_audience"

ACCEPTED = [
    ("", KC, "empty: derived from the endpoint"),
    ("https://kc.example.com/realms/r", KC, "the Keycloak realm (issuer) URL"),
    ("https://kc.example.com/realms/r/", KC, "the realm URL with a trailing slash"),
    ("https://kc.example.com", KC, "the endpoint's origin"),
    ("https://kc.example.com/", KC, "the origin with a trailing slash"),
    (KC, KC, "the endpoint URL itself"),
    ("https://KC.Example.COM/realms/r", KC, "host case does not matter"),
    ("HTTPS://kc.example.com/realms/r", KC, "scheme case does not matter"),
    ("https://kc.example.com:443/realms/r", KC, "the default port spelled out"),
    ("https://auth.example.com", PLAIN, "origin of a plain OAuth endpoint"),
    ("https://auth.example.com/oauth2", PLAIN, "a parent path of the endpoint"),
    ("http://127.0.0.1:18080", LOOPBACK, "the demo issuer"),
]

REFUSED = [
    ("https://other.example.com/realms/r", KC, "different host"),
    ("https://kc.example.com.evil.example/realms/r", KC, "host suffix trick"),
    ("https://kc.example.com:8443/realms/r", KC, "different port"),
    ("http://kc.example.com/realms/r", KC, "different scheme"),
    ("https://kc.example.com/realms/r2", KC, "sibling realm sharing a prefix"),
    ("https://kc.example.com/realms/r2/protocol/openid-connect/token", KC, "sibling's endpoint"),
    ("https://kc.example.com/realms/other", KC, "another realm on the same host"),
    ("https://kc.example.com/realms/r/../r2", KC, "dot segments"),
    ("https://kc.example.com//realms/r", KC, "an extra empty segment"),
    ("https://kc.example.com/Realms/r", KC, "path case matters"),
    ("https://kc.example.com/realms/r%32", KC, "percent-encoded difference"),
    ("https://kc.example.com@evil.example/realms/r", KC, "userinfo hiding the real host"),
    ("https://user:pw@kc.example.com/realms/r", KC, "userinfo on the right host"),
    ("https://kc.example.com/realms/r?x=1", KC, "a query"),
    ("https://kc.example.com/realms/r#frag", KC, "a fragment"),
    ("https://kc.example.com/realms/r?", KC, "an empty query"),
    ("https://kc.example.com:99999/realms/r", KC, "an invalid port"),
    ("kc.example.com/realms/r", KC, "not an absolute URL"),
    ("my-issuer", KC, "not a URL at all"),
    ("spiffe://example.org/issuer", KC, "another scheme"),
    ("http://127.0.0.1:18081", LOOPBACK, "the demo issuer's neighbour port"),
    ("http://localhost:18080", LOOPBACK, "another name for the same address"),
]


@pytest.mark.parametrize(
    ("audience", "endpoint"), [pytest.param(a, e, id=why) for a, e, why in ACCEPTED]
)
def test_audiences_that_identify_the_endpoint_are_accepted(audience: str, endpoint: str) -> None:
    assert svid_audience_problem(audience, endpoint) is None
    assert _audience_errors(audience, endpoint) == []


@pytest.mark.parametrize(
    ("audience", "endpoint"), [pytest.param(a, e, id=why) for a, e, why in REFUSED]
)
def test_audiences_of_another_issuer_are_refused(audience: str, endpoint: str) -> None:
    problem = svid_audience_problem(audience, endpoint)
    assert problem is not None and "does not identify the token endpoint" in problem
    [diagnostic] = _audience_errors(audience, endpoint)
    assert diagnostic.profile == "api" and diagnostic.field == FIELD


def test_the_derived_audience_always_fits() -> None:
    for endpoint in (KC, PLAIN, LOOPBACK, "https://kc.example.com/a/realms/x/b/token"):
        assert svid_audience_problem(derive_svid_audience(endpoint), endpoint) is None


def test_a_broken_token_endpoint_is_reported_once() -> None:
    """The endpoint's own error is enough; no second error about the audience."""
    diagnostics = _diagnose("https://kc.example.com", "ftp://kc.example.com/token")
    assert [d.field for d in diagnostics] == ["credentials[0].token_grant.token_endpoint"]


def test_shipped_profiles_still_lint_clean() -> None:
    files = [
        ROOT / "examples/spiffe-token-grant-demo/provider-profile.yaml",
        ROOT / "examples/spiffe-token-grant-demo/k8s/provider-profile.yaml",
        ROOT / "examples/standalone-proxy/api-profile.yaml",
    ]
    for path in files:
        result = CliRunner().invoke(cli, ["profile", "lint", "-f", str(path)])
        assert result.exit_code == 0, f"{path}: {result.output}"


def test_lint_refuses_a_mismatch_naming_profile_and_field(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(svid_profile("https://issuer.example.net", KC)))
    result = CliRunner().invoke(cli, ["profile", "lint", "-f", str(path), "-o", "json"])
    assert result.exit_code == 1
    found = json.loads(result.stdout)
    diagnostics = found["diagnostics"]
    [mismatch] = [d for d in diagnostics if d["field"] == FIELD]
    assert mismatch["profile"] == "api" and mismatch["severity"] == "error"
    assert "jwt_svid_audience 'https://issuer.example.net' does not identify" in mismatch["message"]


def svid_profile(audience: str, endpoint: str) -> dict[str, Any]:
    """A one-grant profile ``api`` with this SVID audience (empty: derived) and endpoint."""
    grant: dict[str, Any] = {"token_endpoint": endpoint}
    if audience:
        grant["jwt_svid_audience"] = audience
    return {
        "id": "api",
        "credentials": [{"name": "token", "auth_style": "bearer", "token_grant": grant}],
        "endpoints": [{"host": "api.example.com", "port": 443}],
    }


def _diagnose(audience: str, endpoint: str) -> list[Any]:
    profile, diagnostics = parse_profile(svid_profile(audience, endpoint), "<test>")
    assert profile is not None, diagnostics
    return [d for d in validate_profiles([profile]) if d.severity is Severity.ERROR]


def _audience_errors(audience: str, endpoint: str) -> list[Any]:
    return [d for d in _diagnose(audience, endpoint) if d.field == FIELD]
