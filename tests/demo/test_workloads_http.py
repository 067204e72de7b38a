"""The issuer and alpha/beta as real processes on loopback, started by grantbox.demo,
with a key publisher whose keys the test holds (so it can sign SVIDs no agent would issue).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from spiffe_assertion import JWT_BEARER, JWT_SPIFFE

from grantbox.demo import (
    DemoPorts,
    DemoWorkloads,
    IdentitySettings,
    WorkloadError,
    WorkloadProcess,
    check_answer,
    check_proof_of_life,
    running_workloads,
)
from tests.support.demo_keys import (
    DemoKey,
    KeyPublisher,
    hmac_signed,
    jwks,
    make_key,
    running_key_publisher,
    svid_claims,
    unsigned,
)

TD = "grantbox.local"
SANDBOX = f"spiffe://{TD}/grantbox/sandbox/sb-http"


class Demo:
    def __init__(self, workloads: DemoWorkloads, publisher: KeyPublisher, key: DemoKey) -> None:
        self.workloads = workloads
        self.publisher = publisher
        self.key = key
        self.http = httpx.Client(trust_env=False, timeout=10.0)

    @property
    def issuer(self) -> str:
        return self.workloads.issuer_url

    def svid(self, sub: str = SANDBOX, **changes: Any) -> str:
        return self.key.sign(svid_claims(sub, self.issuer) | changes)

    def token_request(self, assertion: str, **fields: str | None) -> httpx.Response:
        form: dict[str, str | None] = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_SPIFFE,
            "client_assertion": assertion,
            "audience": "alpha",
            "scope": "alpha",
        }
        form.update(fields)
        data = {k: v for k, v in form.items() if v is not None}
        return self.http.post(f"{self.issuer}/token", data=data)

    def access_token(self, audience: str = "alpha") -> str:
        response = self.token_request(self.svid(), audience=audience, scope=audience)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def call(self, service: str, path: str = "/hello", token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.http.get(f"{self.workloads.service(service).url}{path}", headers=headers)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    key = make_key("ES256")
    with running_key_publisher(jwks(key)) as publisher:
        identity = IdentitySettings(oidc_url=publisher.url, trust_domain=TD)
        logs = tmp_path_factory.mktemp("demo-logs")
        with running_workloads(
            identity, logs, ports=DemoPorts.any(), jwks_min_refresh=0.2
        ) as workloads:
            demo = Demo(workloads, publisher, key)
            yield demo
            demo.http.close()


def test_valid_svid_gets_an_es256_access_token_with_the_right_claims(demo: Demo) -> None:
    before = demo.workloads.issuer_stats()
    response = demo.token_request(demo.svid(), audience="beta", scope="beta")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "beta profile email"
    keys = demo.http.get(f"{demo.issuer}/jwks").json()
    signing_key = jwt.PyJWKSet.from_dict(keys).keys[0]
    claims = jwt.decode(
        body["access_token"], signing_key.key, algorithms=["ES256"], audience="beta"
    )
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "ES256"
    assert claims["aud"] == ["beta", "account"]
    assert claims["scope"] == "beta profile email"
    assert claims["azp"] == claims["client_id"] == claims["sub"] == SANDBOX
    assert claims["iss"] == demo.issuer
    assert claims["exp"] - claims["iat"] == 300
    assert claims["jti"]
    after = demo.workloads.issuer_stats()
    assert after["token_requests"] == before["token_requests"] + 1
    assert after["issued"] == before["issued"] + 1


def test_issuer_metadata_names_its_endpoints(demo: Demo) -> None:
    metadata = demo.http.get(f"{demo.issuer}/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == demo.issuer
    assert metadata["token_endpoint"] == demo.workloads.token_url
    assert metadata["jwks_uri"] == f"{demo.issuer}/jwks"


def refusal_cases(demo: Demo) -> list[tuple[str, str, dict[str, Any], str, int]]:
    """(case, assertion, extra form fields, error, status)"""
    now = int(time.time())
    stranger = make_key("ES256")
    return [
        ("wrong aud", demo.svid(aud=["http://127.0.0.1:1"]), {}, "invalid_client", 401),
        ("extra aud", demo.svid(aud=[demo.issuer, "alpha"]), {}, "invalid_client", 401),
        ("expired", demo.svid(exp=now - 5), {}, "invalid_client", 401),
        ("foreign trust domain", demo.svid("spiffe://evil.example/grantbox/sandbox/x"), {},
         "invalid_client", 401),
        ("wrong path prefix", demo.svid(f"spiffe://{TD}/grantbox/gateway"), {},
         "invalid_client", 401),
        ("unknown kid", stranger.sign(svid_claims(SANDBOX, demo.issuer)), {},
         "invalid_client", 401),
        ("HS256", hmac_signed(svid_claims(SANDBOX, demo.issuer), demo.key.kid), {},
         "invalid_client", 401),
        ("none", unsigned(svid_claims(SANDBOX, demo.issuer), demo.key.kid), {},
         "invalid_client", 401),
        ("jwt-bearer type", demo.svid(), {"client_assertion_type": JWT_BEARER},
         "invalid_client", 401),
        ("no assertion", "", {}, "invalid_client", 401),
        ("scope without audience", demo.svid(), {"scope": "beta"}, "invalid_scope", 400),
        ("no scope", demo.svid(), {"scope": None}, "invalid_scope", 400),
        ("unknown audience", demo.svid(), {"audience": "gamma", "scope": "gamma"},
         "invalid_target", 400),
        ("no audience", demo.svid(), {"audience": None}, "invalid_request", 400),
        ("password grant", demo.svid(), {"grant_type": "password"}, "unsupported_grant_type", 400),
        ("client secret", demo.svid(), {"client_secret": "x"}, "invalid_request", 400),
        ("client_id of another", demo.svid(), {"client_id": f"spiffe://{TD}/grantbox/sandbox/y"},
         "invalid_client", 401),
    ]  # fmt: skip


def test_every_bad_request_gets_its_oauth_error_and_no_token(demo: Demo) -> None:
    cases = refusal_cases(demo)
    before = demo.workloads.issuer_stats()
    for case, assertion, extra, error, status in cases:
        response = demo.token_request(assertion, **extra)
        assert (response.status_code, response.json().get("error")) == (status, error), case
        assert "access_token" not in response.json(), case
        assert response.headers["content-type"] == "application/json", case
    after = demo.workloads.issuer_stats()
    assert after["token_requests"] == before["token_requests"] + len(cases)
    assert after["issued"] == before["issued"]


def test_malformed_http_requests(demo: Demo) -> None:
    url = f"{demo.issuer}/token"
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_SPIFFE,
            "client_assertion": demo.svid(), "audience": "alpha", "scope": "alpha"}  # fmt: skip
    as_json = demo.http.post(url, json=form)
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    repeated = demo.http.post(
        url,
        content=httpx.QueryParams(form).add("audience", "beta").__str__(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert (repeated.status_code, repeated.json()["error"]) == (400, "invalid_request")
    with_basic = demo.http.post(url, data=form, auth=("client", "secret"))
    assert (with_basic.status_code, with_basic.json()["error"]) == (400, "invalid_request")
    huge = demo.http.post(url, data={**form, "padding": "x" * 100_000})
    assert huge.status_code == 413
    assert demo.http.get(url).status_code == 405
    assert demo.http.get(f"{demo.issuer}/nothing").json() == {"error": "not_found"}


def test_rotated_agent_key_is_picked_up_on_unknown_kid(demo: Demo) -> None:
    rotated = make_key("ES256")
    demo.publisher.document = jwks(demo.key, rotated)
    time.sleep(0.3)  # past the issuer's minimum re-fetch interval
    response = demo.token_request(rotated.sign(svid_claims(SANDBOX, demo.issuer)))
    assert response.status_code == 200, response.text


def test_a_flood_of_unknown_kids_does_not_flood_the_key_publisher(demo: Demo) -> None:
    before = demo.publisher.jwks_requests
    started = time.monotonic()
    for _ in range(30):
        stranger = make_key("ES256")
        response = demo.token_request(stranger.sign(svid_claims(SANDBOX, demo.issuer)))
        assert response.status_code == 401
    elapsed = time.monotonic() - started
    fetched = demo.publisher.jwks_requests - before
    assert fetched <= 1 + elapsed / 0.2  # the issuer's --jwks-min-refresh in this module
    assert fetched < 30


def test_issuer_without_reachable_keys_answers_503(tmp_path: Path) -> None:
    identity = IdentitySettings(oidc_url="http://127.0.0.1:9", trust_domain=TD)
    with running_workloads(identity, tmp_path, ports=DemoPorts.any()) as workloads:
        key = make_key("ES256")
        svid = key.sign(svid_claims(SANDBOX, workloads.issuer_url))
        form = {"grant_type": "client_credentials", "client_assertion_type": JWT_SPIFFE,
                "client_assertion": svid, "audience": "alpha", "scope": "alpha"}  # fmt: skip
        response = httpx.post(workloads.token_url, data=form, trust_env=False, timeout=30)
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"


def test_alpha_accepts_alphas_token_and_logs_proof_of_life(demo: Demo) -> None:
    token = demo.access_token("alpha")
    response = demo.call("alpha", "/hello", token)
    assert response.status_code == 200, response.text
    checks = check_answer("alpha", response.text, SANDBOX)
    assert all(c.ok for c in checks), checks
    assert response.json()["path"] == "/hello"
    proof = check_proof_of_life("alpha", demo.workloads.alpha.log_lines(), SANDBOX)
    assert proof.ok, demo.workloads.alpha.log_tail()


def test_beta_accepts_betas_token(demo: Demo) -> None:
    response = demo.call("beta", "/", demo.access_token("beta"))
    assert response.status_code == 200
    assert all(c.ok for c in check_answer("beta", response.text, SANDBOX))


def test_alpha_refuses_betas_token_no_token_and_garbage(demo: Demo) -> None:
    accepted_before = len(
        [line for line in demo.workloads.alpha.log_lines() if "accepted request" in line]
    )
    wrong = demo.call("alpha", "/hello", demo.access_token("beta"))
    assert wrong.status_code == 403
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert wrong.json()["error"] == "insufficient_scope"
    missing = demo.call("alpha", "/hello")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="alpha"'
    garbage = demo.call("alpha", "/hello", "garbage")
    assert garbage.status_code == 401
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]
    forged = demo.call("alpha", "/hello", make_key("ES256").sign({"aud": ["alpha"]}))
    assert forged.status_code == 401
    accepted_after = len(
        [line for line in demo.workloads.alpha.log_lines() if "accepted request" in line]
    )
    assert accepted_after == accepted_before


def test_logs_hold_no_token_or_svid(demo: Demo) -> None:
    svid = demo.svid()
    response = demo.token_request(svid)
    token = response.json()["access_token"]
    demo.call("alpha", "/secret-check", token)
    demo.call("beta", "/secret-check", token)  # refused: logged without the token
    demo.token_request(svid, audience="gamma", scope="gamma")
    time.sleep(0.2)
    for workload in demo.workloads.all():
        text = workload.log_path.read_text()
        for secret in (svid, token, svid.split(".")[2], token.split(".")[2]):
            assert secret not in text, workload.name
    assert any("secret-check" in line for line in demo.workloads.beta.log_lines())


def test_log_lines_cannot_be_forged_through_the_path(demo: Demo) -> None:
    token = demo.access_token("alpha")
    injected = "/x%0A2026-01-01 alpha: accepted request GET /fake from spiffe://evil/x scope=alpha"
    assert demo.call("alpha", injected, token).status_code == 200
    assert check_proof_of_life("alpha", demo.workloads.alpha.log_lines(), SANDBOX).ok
    assert not check_proof_of_life("alpha", demo.workloads.alpha.log_lines(), "spiffe://evil/x").ok


def test_a_workload_that_cannot_start_is_reported_with_its_output(tmp_path: Path) -> None:
    import sys

    process = WorkloadProcess(
        "issuer", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path / "i.log"
    )
    process.start()
    with pytest.raises(
        WorkloadError, match=r"exited with status 3 before it was ready \(boom\)"
    ) as info:
        process.wait_ready(10)
    assert "boom" in str(info.value)
