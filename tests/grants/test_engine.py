"""The engine's cache over real parts: single-flight, LRU bound, detaching, negative cache,
refresh ahead, metrics and shutdown."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from grantbox.grants import GrantEngine, GrantError, cache_key
from tests.support.token_endpoint import Behaviour, TokenEndpoint

from .conftest import CountingSource, ManualClock, binding_for, sample

FAILURES = "grantbox_token_grants_total"


async def test_thousand_concurrent_cold_calls_make_one_token_request(
    engine: GrantEngine, issuer: TokenEndpoint, registry: CollectorRegistry
) -> None:
    issuer.behave(Behaviour.grant(delay=0.2))  # keep the request open while callers pile up
    binding = binding_for(issuer)
    tokens = await asyncio.gather(*(engine.obtain(binding) for _ in range(1000)))
    assert issuer.request_count == 1
    assert {t.value for t in tokens} == {issuer.issued[0]}
    assert sample(registry, "grantbox_token_cache_misses_total") == 1
    assert sample(registry, "grantbox_token_cache_coalesced_waits_total") == 999
    assert (await engine.obtain(binding)).value == issuer.issued[0]
    assert issuer.request_count == 1
    assert sample(registry, "grantbox_token_cache_hits_total") == 1


async def test_concurrent_failures_are_shared_too(
    engine: GrantEngine, issuer: TokenEndpoint
) -> None:
    issuer.behave(Behaviour.server_error(503))
    results = await asyncio.gather(
        *(engine.obtain(binding_for(issuer)) for _ in range(200)), return_exceptions=True
    )
    assert issuer.request_count == 1
    assert all(isinstance(r, GrantError) for r in results)
    assert {r.reason for r in results if isinstance(r, GrantError)} == {"token_endpoint_error"}
    assert len({id(r) for r in results}) == 200  # each caller has its own exception object


async def test_distinct_keys_get_distinct_tokens(
    engine: GrantEngine, issuer: TokenEndpoint
) -> None:
    bindings = [
        binding_for(issuer),
        binding_for(issuer, audience="beta"),
        binding_for(issuer, scopes=("alpha",)),
        binding_for(issuer, host="other.example"),
    ]
    tokens = [await engine.obtain(b) for b in bindings]
    assert len({t.value for t in tokens}) == 4
    assert issuer.request_count == 4
    assert [await engine.obtain(b) for b in bindings] == tokens
    assert issuer.request_count == 4


async def test_a_cancelled_caller_does_not_cancel_the_shared_request(
    engine: GrantEngine, issuer: TokenEndpoint
) -> None:
    issuer.behave(Behaviour.grant(delay=0.3))
    binding = binding_for(issuer)
    impatient = asyncio.create_task(engine.obtain(binding))
    patient = asyncio.create_task(engine.obtain(binding))
    await issuer.wait_for_requests(1)
    impatient.cancel()
    token = await patient
    assert impatient.cancelled()
    assert token.value == issuer.issued[0]
    assert issuer.request_count == 1


async def test_lru_bound_holds(identity: CountingSource, issuer: TokenEndpoint) -> None:
    engine = GrantEngine(identity, max_entries=3, registry=(registry := CollectorRegistry()))
    try:
        bindings = [binding_for(issuer, host=f"h{i}.example") for i in range(5)]
        for binding in bindings:
            await engine.obtain(binding)
        assert engine.cached_keys() == [cache_key(b) for b in bindings[2:]]
        assert sample(registry, "grantbox_token_cache_entries") == 3
        await engine.obtain(bindings[4])  # still cached
        assert issuer.request_count == 5
        await engine.obtain(bindings[0])  # evicted: asks again, evicts the oldest (h2)
        assert issuer.request_count == 6
        assert cache_key(bindings[2]) not in engine.cached_keys()
        assert len(engine.cached_keys()) == 3
    finally:
        await engine.aclose()


async def test_replace_bindings_drops_detached_entries(
    engine: GrantEngine, issuer: TokenEndpoint, registry: CollectorRegistry
) -> None:
    kept, dropped = binding_for(issuer), binding_for(issuer, provider="detached")
    await engine.obtain(kept)
    await engine.obtain(dropped)
    engine.replace_bindings([kept])
    assert engine.cached_keys() == [cache_key(kept)]
    assert sample(registry, "grantbox_token_cache_entries") == 1
    await engine.obtain(kept)
    assert issuer.request_count == 2


async def test_request_running_while_its_binding_is_detached_is_not_cached(
    engine: GrantEngine, issuer: TokenEndpoint
) -> None:
    kept, leaving = binding_for(issuer), binding_for(issuer, provider="leaving")
    issuer.behave(Behaviour.grant(delay=0.3))
    running = asyncio.create_task(engine.obtain(leaving))
    await issuer.wait_for_requests(1)
    engine.replace_bindings([kept])
    token = await running  # its caller still gets the answer
    assert token.value == issuer.issued[0]
    assert engine.cached_keys() == []


async def test_fifty_calls_against_a_failing_issuer_make_at_most_two_requests(
    engine: GrantEngine, issuer: TokenEndpoint, registry: CollectorRegistry
) -> None:
    issuer.behave(Behaviour.server_error(503))
    binding = binding_for(issuer)
    reasons: list[str] = []
    started = time.monotonic()
    for _ in range(50):
        with pytest.raises(GrantError) as caught:
            await engine.obtain(binding)
        reasons.append(caught.value.reason)
        await asyncio.sleep(max(0.0, started + len(reasons) * 0.02 - time.monotonic()))
    assert 1 <= issuer.request_count <= 2
    assert set(reasons) == {"token_endpoint_error"}
    served = sample(
        registry, "grantbox_token_cache_failures_served_total", reason="token_endpoint_error"
    )
    assert served == 50 - issuer.request_count


async def test_backoff_grows_and_success_resets_it(
    clocked_engine: GrantEngine, issuer: TokenEndpoint, clock: ManualClock
) -> None:
    issuer.behave(Behaviour.invalid_client())
    binding = binding_for(issuer)

    async def reason() -> str:
        try:
            await clocked_engine.obtain(binding)
        except GrantError as error:
            return error.reason
        return "ok"

    # A rejection is permanent: 15 s, then 30 s (a transient failure starts at 1 s).
    assert await reason() == "token_endpoint_rejected"  # request 1; retry after 15 s
    clock.advance(14.99)
    assert await reason() == "token_endpoint_rejected"  # remembered
    clock.advance(0.01)
    assert await reason() == "token_endpoint_rejected"  # request 2; retry after 30 s
    clock.advance(29.99)
    assert await reason() == "token_endpoint_rejected"  # remembered
    assert issuer.request_count == 2
    issuer.behave(Behaviour.grant())
    clock.advance(0.01)
    assert await reason() == "ok"  # request 3
    assert issuer.request_count == 3


async def test_refresh_ahead_renews_before_expiry_with_no_caller_waiting(
    clocked_engine: GrantEngine, issuer: TokenEndpoint, clock: ManualClock
) -> None:
    issuer.behave(Behaviour.grant(expires_in=300))  # served for 270 s, renewed after 243 s
    binding = binding_for(issuer)
    first = await clocked_engine.obtain(binding)
    clock.advance(242.0)
    assert await clocked_engine.obtain(binding) == first
    assert issuer.request_count == 1

    issuer.behave(Behaviour.grant(expires_in=300, delay=1.0))  # a slow renewal
    clock.advance(1.0)  # 243 s: the last tenth
    served = [await clocked_engine.obtain(binding) for _ in range(20)]
    # Every caller got the current token at once, while the renewal is still at the issuer.
    assert served == [first] * 20
    assert len(issuer.issued) == 1
    await issuer.wait_for_requests(2)
    assert issuer.request_count == 2  # one renewal, not one per caller

    async with asyncio.timeout(5):
        while (current := await clocked_engine.obtain(binding)) == first:
            await asyncio.sleep(0.02)
    assert current.value == issuer.issued[1]
    assert current.expires_at > first.expires_at
    assert clock.now < first.expires_at  # renewed before the old token expired


async def test_failed_renewal_keeps_serving_until_expiry_then_reports(
    clocked_engine: GrantEngine,
    issuer: TokenEndpoint,
    clock: ManualClock,
    registry: CollectorRegistry,
) -> None:
    issuer.behave(Behaviour.grant(expires_in=130))  # served for 100 s, renewed after 90 s
    binding = binding_for(issuer)
    first = await clocked_engine.obtain(binding)
    issuer.behave(Behaviour.server_error(502))
    clock.advance(95.0)
    assert await clocked_engine.obtain(binding) == first  # starts a renewal that fails
    await issuer.wait_for_requests(2)
    async with asyncio.timeout(5):
        while not sample(registry, FAILURES, outcome="failure", reason="token_endpoint_error"):
            await asyncio.sleep(0.01)  # the background renewal has not failed yet
    clock.advance(0.5)  # within the 1 s backoff: keep serving, no second renewal
    assert await clocked_engine.obtain(binding) == first
    assert issuer.request_count == 2
    clock.advance(4.5)  # 100 s: expired and past the backoff, so the caller asks again
    with pytest.raises(GrantError) as caught:
        await clocked_engine.obtain(binding)
    assert caught.value.reason == "token_endpoint_error"
    assert issuer.request_count == 3
    with pytest.raises(GrantError) as caught:  # and the next caller gets the remembered failure
        await clocked_engine.obtain(binding)
    assert caught.value.reason == "token_endpoint_error"
    assert issuer.request_count == 3


async def test_metrics_count_grants_by_outcome_and_reason(
    engine: GrantEngine, issuer: TokenEndpoint, registry: CollectorRegistry
) -> None:
    await engine.obtain(binding_for(issuer))
    await engine.obtain(binding_for(issuer))
    issuer.behave(Behaviour.invalid_client())
    with pytest.raises(GrantError):
        await engine.obtain(binding_for(issuer, audience="beta"))
    with pytest.raises(GrantError):
        await engine.obtain(binding_for(issuer, token_endpoint="http://evil.example/token"))

    def grants(outcome: str, reason: str = "") -> float:
        return sample(registry, "grantbox_token_grants_total", outcome=outcome, reason=reason)

    assert grants("success") == 1
    assert grants("failure", "token_endpoint_rejected") == 1
    assert grants("failure", "grant_misconfigured") == 1
    assert sample(registry, "grantbox_token_cache_hits_total") == 1
    assert sample(registry, "grantbox_token_cache_misses_total") == 3
    assert sample(registry, "grantbox_token_cache_entries") == 3
    count = sample(registry, "grantbox_token_grant_duration_seconds_count", outcome="success")
    assert count == 1
    assert sample(registry, "grantbox_token_grant_duration_seconds_sum", outcome="success") > 0


async def test_aclose_cancels_running_requests(
    identity: CountingSource, issuer: TokenEndpoint
) -> None:
    engine = GrantEngine(identity, registry=CollectorRegistry())
    issuer.behave(Behaviour.hang())
    waiting = asyncio.create_task(engine.obtain(binding_for(issuer)))
    await issuer.wait_for_requests(1)
    async with asyncio.timeout(5):
        await engine.aclose()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    with pytest.raises(GrantError) as caught:
        await engine.obtain(binding_for(issuer))
    assert caught.value.reason == "grant_misconfigured"


async def test_detached_binding_failure_is_not_remembered(
    engine: GrantEngine, issuer: TokenEndpoint
) -> None:
    kept, leaving = binding_for(issuer), binding_for(issuer, provider="leaving")
    issuer.behave(Behaviour.answer(503, b"", delay=0.3))
    running = asyncio.create_task(engine.obtain(leaving))
    await issuer.wait_for_requests(1)
    engine.replace_bindings([kept])
    with pytest.raises(GrantError):
        await running
    assert engine.cached_keys() == []


async def test_failures_are_logged_without_tokens_or_svids(
    engine: GrantEngine,
    issuer: TokenEndpoint,
    identity: CountingSource,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await engine.obtain(binding_for(issuer))
    issuer.behave(Behaviour.grant(access_token="LEAKED\r\nX: 1"))
    with pytest.raises(GrantError) as caught:
        await engine.obtain(binding_for(issuer, audience="beta"))
    failures = [r for r in caplog.records if r.getMessage() == "token grant failed"]
    assert len(failures) == 1
    fields = failures[0].__dict__["fields"]
    assert fields["binding"] == binding_for(issuer, audience="beta").id
    assert fields["reason"] == "token_malformed"
    assert fields["detail"] == caught.value.detail
    secrets = [*issuer.issued, *identity.tokens]
    assert len(secrets) == 4
    for secret in secrets:
        assert secret not in caplog.text
        assert secret not in repr(caught.value)
    assert "LEAKED" not in caplog.text


async def test_engines_without_a_registry_keep_their_metrics_apart(
    identity: CountingSource, issuer: TokenEndpoint
) -> None:
    first, second = GrantEngine(identity), GrantEngine(identity)
    try:
        await first.obtain(binding_for(issuer))
        assert first.registry is not second.registry
        assert sample(first.registry, "grantbox_token_cache_misses_total") == 1
        assert sample(second.registry, "grantbox_token_cache_misses_total") == 0
    finally:
        await first.aclose()
        await second.aclose()
