"""The cache as plain state: lookup decisions, LRU bound, failures, detaching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.grants import AccessToken, TokenEndpointError, TokenMalformed, cache_key, cache_ttl
from grantbox.grants.cache import Entry, Lookup, TokenCache, decide
from grantbox.grants.request import CacheKey

from .bindings import make_binding

TOKEN = AccessToken("tok", expires_at=100.0)
FAILURE = TokenEndpointError("down")


@pytest.mark.parametrize(
    ("entry", "now", "renewing", "lookup"),
    [
        (None, 0.0, False, Lookup.MISS),
        (None, 0.0, True, Lookup.MISS),
        (Entry(token=TOKEN, refresh_at=90.0), 10.0, False, Lookup.HIT),
        (Entry(token=TOKEN, refresh_at=90.0), 90.0, False, Lookup.HIT_RENEW),
        (Entry(token=TOKEN, refresh_at=90.0), 95.0, True, Lookup.HIT),
        (Entry(token=TOKEN, refresh_at=90.0), 100.0, False, Lookup.MISS),
        (Entry(token=TOKEN, refresh_at=90.0), 100.0, True, Lookup.MISS),
        # a renewal that failed backs off: keep serving, do not renew again yet
        (
            Entry(token=TOKEN, refresh_at=90.0, failure=FAILURE, retry_at=97.0),
            95.0,
            False,
            Lookup.HIT,
        ),
        (
            Entry(token=TOKEN, refresh_at=90.0, failure=FAILURE, retry_at=97.0),
            97.0,
            False,
            Lookup.HIT_RENEW,
        ),
        # expired token and a remembered failure: the failure is the answer until retry_at
        (
            Entry(token=TOKEN, refresh_at=90.0, failure=FAILURE, retry_at=105.0),
            101.0,
            False,
            Lookup.FAILED,
        ),
        (Entry(failure=FAILURE, retry_at=5.0), 4.9, False, Lookup.FAILED),
        (Entry(failure=FAILURE, retry_at=5.0), 5.0, False, Lookup.MISS),
    ],
)
def test_decide(entry: Entry | None, now: float, renewing: bool, lookup: Lookup) -> None:
    assert decide(entry, now, renewing) is lookup


def test_access_token_repr_hides_the_value_and_refuses_non_token68() -> None:
    assert "SECRET" not in repr(AccessToken("SECRET", 1.0))
    with pytest.raises(TokenMalformed):
        AccessToken("bad\r\nvalue", 1.0)


def _key(i: int) -> CacheKey:
    return cache_key(make_binding(host=f"h{i}.example"))


def test_lru_bound_evicts_least_recently_used() -> None:
    cache = TokenCache(max_entries=3)
    for i in range(3):
        cache.store_token(_key(i), TOKEN, 100, 0)
    assert cache.get(_key(0)) is not None  # 0 becomes most recent
    cache.store_token(_key(3), TOKEN, 100, 0)
    assert len(cache) == 3
    assert _key(1) not in cache
    assert all(_key(i) in cache for i in (0, 2, 3))


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=300), st.integers(1, 10))
def test_lru_never_exceeds_its_bound(keys: list[int], bound: int) -> None:
    cache = TokenCache(max_entries=bound)
    for i in keys:
        if i % 3:
            cache.store_token(_key(i), TOKEN, 100, 0)
        else:
            cache.store_failure(_key(i), FAILURE, 0, 0.0)
        assert len(cache) <= bound
    if keys:
        assert _key(keys[-1]) in cache


def test_failures_back_off_exponentially_and_success_forgets_them() -> None:
    cache = TokenCache()
    key = _key(0)
    assert cache.store_failure(key, FAILURE, 10.0, 0.0) == 11.0
    assert cache.store_failure(key, FAILURE, 11.0, 0.0) == 13.0
    assert cache.store_failure(key, FAILURE, 13.0, 0.0) == 17.0
    cache.store_token(key, TOKEN, 50, 20.0)
    entry = cache.get(key)
    assert entry is not None
    assert entry.failure is None
    assert entry.failures == 0
    assert entry.refresh_at == 65.0
    assert cache.store_failure(key, FAILURE, 30.0, 0.0) == 31.0


def test_failure_keeps_a_still_valid_token() -> None:
    cache = TokenCache()
    key = _key(0)
    cache.store_token(key, TOKEN, 100, 0.0)
    cache.store_failure(key, FAILURE, 95.0, 0.0)
    entry = cache.get(key)
    assert entry is not None
    assert entry.token is TOKEN
    assert decide(entry, 95.5, False) is Lookup.HIT


def test_retain_drops_the_rest() -> None:
    cache = TokenCache()
    for i in range(5):
        cache.store_token(_key(i), TOKEN, 100, 0)
    assert cache.retain(lambda k: k in {_key(1), _key(3)}) == 3
    assert set(cache.keys()) == {_key(1), _key(3)}


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TokenCache(0)


operations = st.lists(
    st.tuples(
        st.sampled_from(["grant", "fail", "look"]),
        st.floats(min_value=0.0, max_value=500.0, allow_nan=False),
        st.one_of(st.none(), st.integers(min_value=1, max_value=5000)),
        st.integers(min_value=0, max_value=5000),
    ),
    max_size=60,
)


@given(operations)
def test_a_token_is_never_served_after_the_issuer_said_it_expires(
    ops: list[tuple[str, float, int | None, int]],
) -> None:
    cache = TokenCache()
    key = _key(0)
    now = 0.0
    issuer_expiry: dict[str, float] = {}
    serial = 0
    for op, elapsed, expires_in, configured in ops:
        now += elapsed
        if op == "grant":
            serial += 1
            ttl = cache_ttl(expires_in, configured)
            token = AccessToken(f"t{serial}", now + ttl)
            if expires_in is not None:
                issuer_expiry[token.value] = now + expires_in
            elif configured <= 0:
                issuer_expiry[token.value] = now + 300  # the assumed lifetime
            else:
                issuer_expiry[token.value] = float("inf")  # the operator's word only
            cache.store_token(key, token, ttl, now)
            entry = cache.get(key)
            assert entry is not None
            assert entry.refresh_at < token.expires_at  # renewal always starts before expiry
        elif op == "fail":
            cache.store_failure(key, FAILURE, now, 0.5)
        lookup = decide(cache.get(key), now, renewing=False)
        entry = cache.get(key)
        if lookup in (Lookup.HIT, Lookup.HIT_RENEW):
            assert entry is not None
            assert entry.token is not None
            assert now < issuer_expiry[entry.token.value]
        if lookup is Lookup.FAILED:
            assert entry is not None
            assert now < entry.retry_at
            assert entry.token is None or now >= entry.token.expires_at
