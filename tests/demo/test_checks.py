"""The demo's judgement of what a sandbox's requests produced (pure), and the small pure
parts of starting workloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from grantbox.demo import (
    EXAMPLE_DIR_ENV,
    DemoPorts,
    WorkloadError,
    check_answer,
    check_proof_of_life,
    find_example_dir,
    listening_url,
    proofs_of_life,
    service_claims,
)

SANDBOX = "spiffe://grantbox.local/grantbox/sandbox/sb-1"


def answer(service: str = "alpha", **changes: Any) -> str:
    claims = {
        "iss": "http://127.0.0.1:18080",
        "sub": SANDBOX,
        "aud": [service, "account"],
        "scope": f"{service} profile email",
        "azp": SANDBOX,
        "client_id": SANDBOX,
        "exp": 2_000_000_300,
        "iat": 2_000_000_000,
    }
    claims.update(changes)
    return json.dumps({"service": service, "method": "GET", "path": "/", "claims": claims})


def failed(checks: list[Any]) -> list[str]:
    return [c.name for c in checks if not c.ok]


def test_a_correct_answer_passes_every_check() -> None:
    assert failed(check_answer("alpha", answer(), SANDBOX)) == []
    assert failed(check_answer("beta", answer("beta"), SANDBOX)) == []


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({"aud": ["beta", "account"]}, "aud"),
        ({"aud": ["alpha"]}, "aud"),
        ({"aud": "alpha"}, "aud"),
        ({"scope": "alpha"}, "scope"),
        ({"scope": "beta profile email"}, "scope"),
        ({"azp": "spiffe://grantbox.local/grantbox/sandbox/other"}, "azp"),
        ({"client_id": None}, "client_id"),
        ({"sub": "someone"}, "client_id"),
    ],
)
def test_each_wrong_claim_fails_its_check(changes: dict[str, Any], failing: str) -> None:
    names = failed(check_answer("alpha", answer(**changes), SANDBOX))
    assert len(names) == 1
    assert failing in names[0]


@pytest.mark.parametrize("body", ["", "not json", "[]", '{"claims": 3}', '{"error": "x"}'])
def test_answers_without_claims_fail(body: str) -> None:
    assert service_claims(body) == {}
    assert failed(check_answer("alpha", body, SANDBOX)) == ["alpha: answered with claims"]


def test_another_sandboxs_answer_fails() -> None:
    other = "spiffe://grantbox.local/grantbox/sandbox/sb-2"
    assert failed(check_answer("alpha", answer(), other))


LOG = [
    "2026-11-29 08:00:00,000 INFO alpha: listening on http://127.0.0.1:18081",
    f"2026-11-29 08:00:01,000 INFO alpha: accepted request GET /hello from {SANDBOX} "
    "scope=alpha profile email",
    "2026-11-29 08:00:02,000 WARNING alpha: refused request GET /hello: 401 a bearer token",
    "2026-11-29 08:00:03,000 INFO beta: accepted request POST /x from spiffe://td/b scope=beta",
]


def test_proof_of_life_lines_are_parsed_per_service() -> None:
    (alpha,) = proofs_of_life(LOG, "alpha")
    assert (alpha.method, alpha.path, alpha.client, alpha.scope) == (
        "GET",
        "/hello",
        SANDBOX,
        "alpha profile email",
    )
    assert [p.client for p in proofs_of_life(LOG, "beta")] == ["spiffe://td/b"]
    assert check_proof_of_life("alpha", LOG, SANDBOX).ok
    assert not check_proof_of_life("alpha", LOG, "spiffe://td/b").ok
    assert not check_proof_of_life("alpha", LOG[2:], SANDBOX).ok


def test_listening_url_is_read_from_the_readiness_line() -> None:
    assert listening_url(LOG, "alpha") == "http://127.0.0.1:18081"
    assert listening_url(LOG, "beta") is None
    assert listening_url(["x INFO issuer: listening on http://[::1]:5 "], "issuer") == (
        "http://[::1]:5"
    )


def test_demo_ports_default_to_the_profile() -> None:
    ports = DemoPorts()
    assert (ports.issuer, ports.of("alpha"), ports.of("beta")) == (18080, 18081, 18082)
    assert DemoPorts.any() == DemoPorts(0, 0, 0)


def test_example_dir_is_found_from_the_checkout_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = find_example_dir()
    assert (found / "issuer.py").is_file()
    monkeypatch.setenv(EXAMPLE_DIR_ENV, str(found))
    assert find_example_dir(tmp_path / "pkg" / "x.py") == found
    monkeypatch.delenv(EXAMPLE_DIR_ENV)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkloadError, match=EXAMPLE_DIR_ENV):
        find_example_dir(tmp_path / "pkg" / "x.py")


def test_flow_addresses_and_identity() -> None:
    from grantbox.demo.flow import sandbox_spiffe_id, service_url

    assert service_url("alpha", DemoPorts()) == "http://alpha.localhost:18081/hello"
    assert service_url("beta", DemoPorts(1, 2, 3)) == "http://beta.localhost:3/hello"
    assert sandbox_spiffe_id("grantbox.local", "abc") == (
        "spiffe://grantbox.local/grantbox/sandbox/abc"
    )


def test_a_refused_answer_fails_the_status_check_and_the_claims() -> None:
    from grantbox.demo import HttpProbe
    from grantbox.demo.flow import answer_checks

    ok = answer_checks("alpha", HttpProbe(200, answer()), SANDBOX)
    assert failed(ok) == []
    refused = HttpProbe(502, '{"error": "token_grant_failed", "reason": "x"}')
    assert failed(answer_checks("alpha", refused, SANDBOX)) == [
        "alpha: answered 200",
        "alpha: answered with claims",
    ]
