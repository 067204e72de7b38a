"""Key sets: parsing JWKS documents, the refresh rule, and fetching over real HTTP."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from key_set import (
    FetchState,
    KeySetError,
    KeySetSource,
    RefreshPolicy,
    discovery_document_url,
    jwks_uri_of,
    key_fits,
    key_set_http_client,
    parse_key_set,
    should_fetch,
)

from tests.support.demo_keys import KeyPublisher, jwks, make_key, running_key_publisher


def test_parse_keeps_only_public_signing_keys() -> None:
    ec_key, rsa_key = make_key("ES256"), make_key("RS256")
    document = {
        "keys": [
            ec_key.public_jwk(use="sig", alg="ES256"),
            rsa_key.public_jwk(),
            make_key("ES256").public_jwk(use="enc"),
            make_key("ES256").public_jwk(use="x509-svid"),
            {k: v for k, v in make_key("ES256").public_jwk().items() if k != "kid"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {**make_key("ES256").public_jwk(), "d": "private-part"},
            {"kty": "EC", "kid": "broken", "crv": "P-256", "x": "AA", "y": "AA"},
            {**make_key("ES256").public_jwk(), "alg": 5},
            "not a key",
        ]
    }
    keys = parse_key_set(document)
    assert set(keys) == {ec_key.kid, rsa_key.kid}
    assert keys[ec_key.kid].alg == "ES256"
    assert keys[rsa_key.kid].alg is None


def test_a_kid_published_twice_is_dropped() -> None:
    first, second = make_key("ES256", kid="dup"), make_key("ES256", kid="dup")
    assert parse_key_set(jwks(first, second)) == {}


@pytest.mark.parametrize("document", [None, [], {}, {"keys": "x"}, {"keys": None}])
def test_non_jwks_documents_are_errors(document: Any) -> None:
    with pytest.raises(KeySetError):
        parse_key_set(document)


def test_key_fits_algorithm_family_and_curve() -> None:
    p256 = parse_key_set(jwks(make_key("ES256")))
    p384 = parse_key_set(jwks(make_key("ES384")))
    rsa = parse_key_set(jwks(make_key("RS256")))
    (k256,), (k384,), (krsa,) = p256.values(), p384.values(), rsa.values()
    assert key_fits("ES256", k256.public_key) and not key_fits("ES384", k256.public_key)
    assert key_fits("ES384", k384.public_key) and not key_fits("ES256", k384.public_key)
    for alg in ("RS256", "RS512", "PS384"):
        assert key_fits(alg, krsa.public_key) and not key_fits(alg, k256.public_key)
    for alg in ("HS256", "none", "EdDSA", ""):
        assert not key_fits(alg, krsa.public_key) and not key_fits(alg, k256.public_key)


def test_discovery_urls() -> None:
    well_known = "/.well-known/openid-configuration"
    assert discovery_document_url("http://h:1") == f"http://h:1{well_known}"
    assert discovery_document_url("http://h:1/") == f"http://h:1{well_known}"
    assert discovery_document_url(f"http://h:1{well_known}") == f"http://h:1{well_known}"
    assert jwks_uri_of({"jwks_uri": "http://h:1/keys"}) == "http://h:1/keys"
    for document in ({}, {"jwks_uri": "file:///etc/passwd"}, {"jwks_uri": 3}, []):
        with pytest.raises(KeySetError):
            jwks_uri_of(document)


POLICY = RefreshPolicy(max_age=300, min_interval=5)


def test_refresh_rule_cases() -> None:
    assert should_fetch(0, FetchState(), POLICY, kid_known=False)
    assert not should_fetch(10, FetchState(8, 8), POLICY, kid_known=False)
    assert should_fetch(14, FetchState(8, 8), POLICY, kid_known=False)
    assert not should_fetch(14, FetchState(8, 8), POLICY, kid_known=True)
    assert should_fetch(308, FetchState(8, 8), POLICY, kid_known=True)
    # A failed attempt also counts against the rate limit.
    assert not should_fetch(12, FetchState(None, 10), POLICY, kid_known=False)
    assert should_fetch(15, FetchState(None, 10), POLICY, kid_known=False)


@given(
    st.lists(
        st.tuples(st.floats(0, 20, allow_nan=False), st.booleans(), st.booleans()), max_size=60
    )
)
def test_refresh_rule_never_fetches_faster_than_the_rate_limit(
    steps: list[tuple[float, bool, bool]],
) -> None:
    """Whatever the sequence of lookups (known or unknown kid, fetch ok or not), two fetch
    attempts are at least ``min_interval`` apart, and a lookup of an unknown kid fetches
    whenever the rate limit allows."""
    now, state, attempts = 0.0, FetchState(), []
    for delay, kid_known, fetch_ok in steps:
        now += delay
        allowed = state.attempted_at is None or now - state.attempted_at >= POLICY.min_interval
        fetch = should_fetch(now, state, POLICY, kid_known)
        if not kid_known or state.fetched_at is None:
            assert fetch == allowed
        if fetch:
            attempts.append(now)
            state = FetchState(now if fetch_ok else state.fetched_at, now)
    assert all(b - a >= POLICY.min_interval for a, b in itertools.pairwise(attempts))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def publisher() -> Iterator[KeyPublisher]:
    with running_key_publisher(jwks(make_key("ES256", kid="k1"))) as running:
        yield running


async def test_source_follows_discovery_and_refetches_on_unknown_kid_with_rate_limit(
    publisher: KeyPublisher,
) -> None:
    clock = Clock()
    async with key_set_http_client() as http:
        source = KeySetSource(
            http, discovery_url=publisher.url, policy=RefreshPolicy(300, 5), clock=clock
        )
        assert set(await source.keys_for("k1")) == {"k1"}
        assert (publisher.discovery_requests, publisher.jwks_requests) == (1, 1)
        assert set(await source.keys_for("k1")) == {"k1"}
        assert publisher.jwks_requests == 1  # cached

        publisher.document = jwks(make_key("ES256", kid="k1"), make_key("ES256", kid="k2"))
        clock.now += 1
        assert "k2" not in await source.keys_for("k2")  # rate limited: no fetch yet
        assert publisher.jwks_requests == 1
        clock.now += 5
        assert "k2" in await source.keys_for("k2")  # unknown kid → re-fetch
        assert publisher.jwks_requests == 2
        for _ in range(5):
            await source.keys_for("made-up")
        assert publisher.jwks_requests == 2  # a flood of unknown kids is not a flood of fetches

        clock.now += 301
        await source.keys_for("k1")
        assert publisher.jwks_requests == 3  # stale set is refreshed even for a known kid


async def test_source_keeps_the_last_good_set_when_a_refetch_fails(
    publisher: KeyPublisher,
) -> None:
    clock = Clock()
    async with key_set_http_client() as http:
        source = KeySetSource(http, jwks_url=publisher.jwks_url, clock=clock)
        assert "k1" in await source.keys_for("k1")
        publisher.document = {"not": "a jwks"}
        clock.now += 400
        assert "k1" in await source.keys_for("k1")
        assert source.fetches == 2


async def test_source_without_any_key_set_fails_closed(publisher: KeyPublisher) -> None:
    async with key_set_http_client() as http:
        for url in (f"{publisher.url}/missing", "http://127.0.0.1:9/keys"):
            source = KeySetSource(http, jwks_url=url)
            with pytest.raises(KeySetError):
                await source.keys_for("k1")


async def test_source_refuses_oversized_documents(publisher: KeyPublisher) -> None:
    publisher.document = {"keys": [], "padding": "x" * (2 * 1024 * 1024)}
    async with key_set_http_client() as http:
        source = KeySetSource(http, jwks_url=publisher.jwks_url)
        with pytest.raises(KeySetError):
            await source.keys_for("k1")


def test_source_needs_exactly_one_url() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        KeySetSource(key_set_http_client())
    with pytest.raises(ValueError, match="exactly one"):
        KeySetSource(key_set_http_client(), jwks_url="http://a/keys", discovery_url="http://a")
