"""When a refused SVID earns one retry with a fresh one: the pure rule, then the engine
against a real loopback token endpoint and the real identity agent."""

from __future__ import annotations

import time

import jwt
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from grantbox.grants import GrantEngine, GrantError
from grantbox.grants.freshness import (
    STALE_AFTER_SECONDS,
    issued_at,
    refused_as_client,
    worth_fresh_svid,
)
from grantbox.identity import JwtSvid
from tests.support.token_endpoint import Behaviour, TokenEndpoint

from .conftest import CountingSource, binding_for, sample

NOW = 1_800_000_000.0
REJECTED = "token_endpoint_rejected"
INVALID_CLIENT = "token endpoint answered 401 Unauthorized: error=invalid_client"


def svid(**claims: object) -> str:
    return jwt.encode({"sub": "spiffe://example.org/s", **claims}, "k" * 32, algorithm="HS256")


@pytest.mark.parametrize(
    ("reason", "detail", "iat", "expected"),
    [
        (REJECTED, INVALID_CLIENT, NOW - 400, True),
        (REJECTED, INVALID_CLIENT + "; error_description=Token was issued too far", NOW - 6, True),
        (REJECTED, INVALID_CLIENT, NOW - STALE_AFTER_SECONDS, True),
        (REJECTED, INVALID_CLIENT, NOW - 1, False),  # minted just now: a new one fares alike
        (REJECTED, INVALID_CLIENT, NOW + 30, False),
        (REJECTED, INVALID_CLIENT, None, True),  # no iat: possibly old
        (
            REJECTED,
            "token endpoint answered 400 Bad Request: error=invalid_scope",
            NOW - 400,
            False,
        ),
        (REJECTED, "token endpoint answered 401 Unauthorized", NOW - 400, False),
        (REJECTED, INVALID_CLIENT.replace("invalid_client", "invalid_clientX"), NOW - 400, False),
        (REJECTED, "error_description=error=invalid_client", NOW - 400, False),
        ("token_endpoint_error", INVALID_CLIENT, NOW - 400, False),
        ("workload_identity_unavailable", INVALID_CLIENT, NOW - 400, False),
    ],
)
def test_retry_rule(reason: str, detail: str, iat: float | None, expected: bool) -> None:
    token = svid() if iat is None else svid(iat=iat)
    assert worth_fresh_svid(reason, detail, token, NOW) is expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (svid(iat=123), 123.0),
        (svid(iat=12.5), 12.5),
        (svid(iat="123"), None),
        (svid(iat=True), None),
        (svid(), None),
        ("not-a-jwt", None),
        ("", None),
    ],
)
def test_issued_at(token: str, expected: float | None) -> None:
    assert issued_at(token) == expected


@given(st.text(max_size=300))
def test_other_error_codes_never_count(description: str) -> None:
    assume("invalid_client" not in description)
    detail = f"token endpoint answered 400 Bad Request: error=invalid_request; {description}"
    assert refused_as_client(REJECTED, detail) is False
    assert refused_as_client(REJECTED, f"{INVALID_CLIENT}; error_description={description}")


class ReplayingSource:
    """Serves the first SVID it fetched again and again, as a Workload API cache does."""

    def __init__(self, inner: CountingSource) -> None:
        self.inner = inner
        self.first: JwtSvid | None = None

    async def fetch_jwt_svid(self, audience: str) -> JwtSvid:
        if self.first is None:
            self.first = await self.inner.fetch_jwt_svid(audience)
        return self.first


def engine_for(source: object, registry: CollectorRegistry, svid_age: float) -> GrantEngine:
    """An engine for which every SVID it is handed looks ``svid_age`` seconds old."""
    return GrantEngine(
        source,  # type: ignore[arg-type]
        connect_timeout=2.0,
        total_timeout=3.0,
        registry=registry,
        wall_clock=lambda: time.time() + svid_age,
    )


async def test_an_old_svid_refused_as_invalid_client_is_retried_once_with_a_fresh_one(
    identity: CountingSource, issuer: TokenEndpoint, registry: CollectorRegistry
) -> None:
    issuer.refuse_next(1)
    engine = engine_for(identity, registry, svid_age=400)
    try:
        token = await engine.obtain(binding_for(issuer))
    finally:
        await engine.aclose()
    assert token.value == issuer.issued[0]
    assert issuer.request_count == 2
    sent = [form["client_assertion"][0] for form in issuer.forms()]
    assert sent == identity.tokens and sent[0] != sent[1]  # a fresh SVID, fetched anew
    assert sample(registry, "grantbox_token_fresh_svid_retries_total") == 1
    assert sample(registry, "grantbox_token_grants_total", outcome="success", reason="") == 1


async def test_the_retry_happens_once_only(
    identity: CountingSource, issuer: TokenEndpoint, registry: CollectorRegistry
) -> None:
    issuer.refuse_next(5)
    engine = engine_for(identity, registry, svid_age=400)
    try:
        with pytest.raises(GrantError) as caught:
            await engine.obtain(binding_for(issuer))
    finally:
        await engine.aclose()
    assert caught.value.reason == "token_endpoint_rejected"
    assert "too far in the past" in caught.value.detail
    assert issuer.request_count == 2 and len(identity.tokens) == 2
    assert not any(t in caught.value.detail for t in identity.tokens)


@pytest.mark.parametrize(
    ("svid_age", "refusal", "fetches"),
    [
        (0.0, "invalid_client", 1),  # the SVID was brand new: no fresh one can do better
        (400.0, "invalid_scope", 1),  # the request, not the client, was refused
    ],
)
async def test_no_retry_when_a_fresh_svid_cannot_help(
    identity: CountingSource,
    issuer: TokenEndpoint,
    registry: CollectorRegistry,
    svid_age: float,
    refusal: str,
    fetches: int,
) -> None:
    if refusal == "invalid_client":
        issuer.behave(Behaviour.invalid_client())
    else:
        issuer.behave(Behaviour.answer(400, {"error": refusal}))
    engine = engine_for(identity, registry, svid_age=svid_age)
    try:
        with pytest.raises(GrantError):
            await engine.obtain(binding_for(issuer))
    finally:
        await engine.aclose()
    assert issuer.request_count == 1
    assert len(identity.tokens) == fetches
    assert sample(registry, "grantbox_token_fresh_svid_retries_total") == 0


async def test_no_retry_when_the_workload_api_serves_the_same_svid_again(
    identity: CountingSource, issuer: TokenEndpoint, registry: CollectorRegistry
) -> None:
    issuer.refuse_next(1)
    engine = engine_for(ReplayingSource(identity), registry, svid_age=400)
    try:
        with pytest.raises(GrantError) as caught:
            await engine.obtain(binding_for(issuer))
    finally:
        await engine.aclose()
    assert caught.value.reason == "token_endpoint_rejected"
    assert issuer.request_count == 1  # the same SVID would be refused the same way
    assert sample(registry, "grantbox_token_fresh_svid_retries_total") == 0
