"""Token endpoint manners end to end: Retry-After on 429/503 is honoured (seconds or date,
bounded), transient failures are retried soon and permanent ones late, through the real
engine against a loopback token endpoint (the cache runs on an injected clock)."""

from __future__ import annotations

import email.utils
import time

import pytest

from grantbox.grants import GrantEngine, GrantError
from grantbox.identity_agent import IdentityAgent
from tests.support.oauth_peer import Answer, running_peer
from tests.support.token_endpoint import Behaviour, TokenEndpoint

from .bindings import make_binding
from .conftest import TRUST_DOMAIN, ManualClock, binding_for


async def reason(engine: GrantEngine, issuer: TokenEndpoint) -> str:
    try:
        await engine.obtain(binding_for(issuer))
    except GrantError as error:
        return str(error.reason)
    return "ok"


async def asked_again_after(
    engine: GrantEngine, issuer: TokenEndpoint, clock: ManualClock, step: float = 0.5
) -> float:
    """Seconds (on the engine's clock) until a caller makes the engine ask the endpoint again,
    probing in ``step`` increments; the endpoint is healthy again by then."""
    before = issuer.request_count
    waited = 0.0
    issuer.behave(Behaviour.grant())
    while issuer.request_count == before:
        assert waited <= 400.0, "the failure was remembered beyond every bound"
        clock.advance(step)
        waited += step
        await reason(engine, issuer)
    return waited


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [
        (429, "120", 120.0),
        (503, "45", 45.0),
        (429, "86400", 300.0),  # bounded: a day becomes five minutes
        (503, "0", 1.0),  # never sooner than the transient step
        (429, "later, please", 1.0),  # unusable: ignored
        (500, "120", 1.0),  # only 429 and 503 ask the client to wait
    ],
)
async def test_retry_after_is_honoured_and_bounded(
    clocked_engine: GrantEngine,
    issuer: TokenEndpoint,
    clock: ManualClock,
    status: int,
    header: str,
    expected: float,
) -> None:
    issuer.behave(
        Behaviour.answer(status, {"error": "temporarily_unavailable"}).with_headers(
            ("retry-after", header)
        )
    )
    assert await reason(clocked_engine, issuer) == "token_endpoint_error"
    assert await asked_again_after(clocked_engine, issuer, clock) == pytest.approx(expected)


async def test_retry_after_as_a_date_is_measured_on_the_endpoints_clock(
    clocked_engine: GrantEngine, agent: IdentityAgent, clock: ManualClock
) -> None:
    # The endpoint's clock is a day behind ours; its date says "in 90 s" by its own clock.
    # (This endpoint, unlike uvicorn, adds no Date header of its own.)
    theirs = time.time() - 86400
    with running_peer(oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN) as peer:
        binding = make_binding(token_endpoint=peer.token_url, svid_audience=peer.token_url)
        peer.answer_next(
            Answer(
                503,
                {"error": "temporarily_unavailable"},
                [
                    ("date", email.utils.formatdate(theirs, usegmt=True)),
                    ("retry-after", email.utils.formatdate(theirs + 90, usegmt=True)),
                ],
            )
        )
        with pytest.raises(GrantError) as caught:
            await clocked_engine.obtain(binding)
        assert caught.value.reason == "token_endpoint_error"
        assert "retry after 90 s" in caught.value.detail
        clock.advance(89.0)
        with pytest.raises(GrantError):
            await clocked_engine.obtain(binding)
        assert peer.request_count == 1
        peer.answer_next(Answer(200, {"access_token": "fine", "token_type": "Bearer"}))
        clock.advance(1.0)
        assert (await clocked_engine.obtain(binding)).value == "fine"
        assert peer.request_count == 2


@pytest.mark.parametrize(
    ("behaviour", "failure", "first_step"),
    [
        (Behaviour.server_error(502), "token_endpoint_error", 1.0),
        (Behaviour.answer(429, {"error": "slow_down"}), "token_endpoint_error", 1.0),
        (Behaviour.invalid_client(), "token_endpoint_rejected", 15.0),
        (Behaviour.answer(400, {"error": "invalid_scope"}), "token_endpoint_rejected", 15.0),
        (Behaviour.answer(404, {"error": "not_found"}), "token_endpoint_error", 15.0),
        (Behaviour.answer(200, {"access_token": "has space"}), "token_malformed", 15.0),
    ],
)
async def test_transient_failures_are_retried_soon_and_permanent_ones_late(
    clocked_engine: GrantEngine,
    issuer: TokenEndpoint,
    clock: ManualClock,
    behaviour: Behaviour,
    failure: str,
    first_step: float,
) -> None:
    issuer.behave(behaviour)
    assert await reason(clocked_engine, issuer) == failure
    assert await asked_again_after(clocked_engine, issuer, clock) == pytest.approx(first_step)


async def test_a_timeout_is_transient(
    identity: object, issuer: TokenEndpoint, clock: ManualClock
) -> None:
    engine = GrantEngine(
        identity,  # type: ignore[arg-type]
        total_timeout=0.5,
        clock=clock,
        jitter=lambda: 0.0,
    )
    try:
        issuer.behave(Behaviour.hang())
        assert await reason(engine, issuer) == "token_endpoint_timeout"
        assert await asked_again_after(engine, issuer, clock) == pytest.approx(1.0)
    finally:
        await engine.aclose()
