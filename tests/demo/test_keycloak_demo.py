"""``grantbox demo --issuer keycloak``: the same alpha/beta demo with real Keycloak as the
token service; its pure pieces, and the command itself, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from grantbox.demo import DemoPorts, find_example_dir
from grantbox.demo.checks import check_keycloak_answer
from grantbox.demo.keycloak import Keycloak
from grantbox.demo.operator import grantbox_command
from grantbox.demo.peers import load_peers
from grantbox.demo.with_keycloak import REALM, keycloak_profile
from grantbox.profiles import (
    derive_svid_audience,
    expand_bindings,
    has_errors,
    load_text,
    select_binding,
    validate_profile,
)

from .test_demo_command import free_ports

SANDBOX = "spiffe://grantbox.local/grantbox/sandbox/0123456789abcdef"
ISSUER = "http://127.0.0.1:40000/realms/grantbox-demo"


def test_the_profile_for_keycloak_validates_and_derives_the_realm_audience(
    tmp_path: Path,
) -> None:
    keycloak = Keycloak(tmp_path, tmp_path)
    keycloak.port = 40000
    original = yaml.safe_load((find_example_dir() / "provider-profile.yaml").read_text())
    ports = DemoPorts(18080, 28081, 28082)
    moved = keycloak_profile(original, ports, keycloak)
    grant = moved["credentials"][0]["token_grant"]
    assert grant["token_endpoint"] == f"{ISSUER}/protocol/openid-connect/token"
    assert "jwt_svid_audience" not in grant
    (loaded,) = load_text(yaml.safe_dump(moved), "keycloak.yaml").profiles
    assert not has_errors(validate_profile(loaded.profile))
    bindings = expand_bindings([("demo", loaded.profile)]).bindings
    for service in ("alpha", "beta"):
        binding = select_binding(bindings, f"{service}.localhost", ports.of(service), "/")
        assert binding is not None and binding.scopes == (service,)
        assert binding.svid_audience == ISSUER == derive_svid_audience(grant["token_endpoint"])
    assert keycloak.realm_url(REALM) == ISSUER


def answer(**claims: object) -> str:
    base: dict[str, object] = {
        "iss": ISSUER,
        "aud": "alpha",
        "scope": "alpha",
        "azp": SANDBOX,
        "client_id": SANDBOX,
        "sub": "5b0c3f7e-service-account",
    }
    base.update(claims)
    return json.dumps({"service": "alpha", "claims": base})


@pytest.mark.parametrize(
    ("body", "failed"),
    [
        (answer(), []),
        (answer(aud=["alpha"]), []),
        (answer(aud=["alpha", "account"]), ["alpha: aud is [alpha]"]),
        (answer(scope="beta"), ["alpha: scope holds alpha"]),
        (answer(iss="http://elsewhere/realms/x"), ["alpha: issued by Keycloak"]),
        (answer(azp="someone-else"), ["alpha: azp and client_id are the sandbox's SPIFFE ID"]),
        (answer(client_id=None), ["alpha: azp and client_id are the sandbox's SPIFFE ID"]),
        ("not json", ["alpha: answered with claims"]),
    ],
)
def test_keycloak_answer_checks(body: str, failed: list[str]) -> None:
    checks = check_keycloak_answer("alpha", body, SANDBOX, ISSUER)
    assert [c.name for c in checks if not c.ok] == failed


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root here")
def test_demo_with_keycloak_passes(tmp_path: Path) -> None:
    load_peers()  # built by `make peers`; a missing build fails here with what to run
    ports = free_ports(3)
    done = subprocess.run(
        [*grantbox_command(), "demo", "--issuer", "keycloak", "--ports", ",".join(map(str, ports))],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert "demo passed" in output and "✗" not in output
    assert "register the sandbox's identity with the token service" in output
    for service in ("alpha", "beta"):
        assert f"{service}: issued by Keycloak" in output
        assert f"{service}: accepted request GET /hello from spiffe://grantbox.local/" in output
