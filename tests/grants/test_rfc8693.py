"""RFC 8693 token exchange end to end: the real engine, the real identity agent and Workload
API client, and an independent loopback token endpoint that verifies the subject token's
signature with the agent's JWKS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from grantbox.grants import GrantEngine, GrantError
from grantbox.identity_agent import IdentityAgent
from grantbox.profiles import ACCESS_TOKEN_TYPE, JWT_SPIFFE, JWT_TOKEN_TYPE, GrantBinding
from tests.support.oauth_peer import TOKEN_EXCHANGE, Answer, OAuthPeer, running_peer

from .bindings import make_binding
from .conftest import TRUST_DOMAIN, CountingSource, ManualClock


@pytest.fixture
def peer(agent: IdentityAgent) -> Iterator[OAuthPeer]:
    with running_peer(oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN) as running:
        yield running


def exchange(peer: OAuthPeer, **overrides: Any) -> GrantBinding:
    values: dict[str, Any] = {
        "token_endpoint": peer.token_url,
        "svid_audience": peer.token_url,
        "grant_type": "token_exchange",
        "client_auth": "none",
        "audience": "alpha",
        "resource": ("https://alpha.example/", "https://alpha.example/v2/"),
        "scopes": ("read", "write"),
    }
    values.update(overrides)
    return make_binding(**values)


async def failure(engine: GrantEngine, binding: GrantBinding) -> GrantError:
    with pytest.raises(GrantError) as caught:
        await engine.obtain(binding)
    return caught.value


async def test_wire_format_is_a_token_exchange_with_the_svid_as_subject(
    engine: GrantEngine, peer: OAuthPeer, identity: CountingSource
) -> None:
    token = await engine.obtain(exchange(peer, requested_token_type=ACCESS_TOKEN_TYPE))
    assert token.value == peer.issued[0]
    assert peer.rejections == []
    assert peer.forms() == [
        {
            "grant_type": [TOKEN_EXCHANGE],
            "subject_token": [identity.tokens[0]],
            "subject_token_type": [JWT_TOKEN_TYPE],
            "requested_token_type": [ACCESS_TOKEN_TYPE],
            "audience": ["alpha"],
            "resource": ["https://alpha.example/", "https://alpha.example/v2/"],
            "scope": ["read write"],
        }
    ]
    assert identity.audiences == [peer.token_url]


async def test_optional_parameters_are_left_out(engine: GrantEngine, peer: OAuthPeer) -> None:
    await engine.obtain(exchange(peer, audience="", resource=(), scopes=()))
    assert sorted(peer.forms()[0]) == ["grant_type", "subject_token", "subject_token_type"]


async def test_a_jwt_can_be_requested(engine: GrantEngine, peer: OAuthPeer) -> None:
    token = await engine.obtain(exchange(peer, requested_token_type=JWT_TOKEN_TYPE))
    assert token.value == peer.issued[0]
    assert peer.forms()[0]["requested_token_type"] == [JWT_TOKEN_TYPE]


async def test_jwt_svid_client_auth_sends_the_svid_as_assertion_too(
    engine: GrantEngine, agent: IdentityAgent, identity: CountingSource
) -> None:
    with running_peer(
        oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN, client_auth="jwt_svid"
    ) as peer:
        binding = exchange(peer, client_auth="jwt_svid", assertion_type=JWT_SPIFFE)
        await engine.obtain(binding)
        form = peer.forms()[0]
        assert peer.rejections == []
        assert form["client_assertion_type"] == [JWT_SPIFFE]
        assert form["client_assertion"] == form["subject_token"] == [identity.tokens[0]]
        # Without the assertion, this endpoint refuses the client.
        error = await failure(engine, exchange(peer, audience="other"))
        assert error.reason == "token_endpoint_rejected"
        assert "error=invalid_client" in error.detail


async def test_cached_single_flight_and_keyed_by_resource_and_requested_type(
    engine: GrantEngine, peer: OAuthPeer
) -> None:
    binding = exchange(peer)
    tokens = await asyncio.gather(*(engine.obtain(binding) for _ in range(20)))
    assert {t.value for t in tokens} == {peer.issued[0]}
    assert peer.request_count == 1
    assert (
        await engine.obtain(exchange(peer, resource=tuple(reversed(binding.resource))))
        == (tokens[0])
    )  # the same set of resources
    await engine.obtain(exchange(peer, resource=("https://beta.example/",)))
    await engine.obtain(exchange(peer, requested_token_type=JWT_TOKEN_TYPE))
    await engine.obtain(exchange(peer, client_id="gbx"))
    await engine.obtain(exchange(peer, audience="beta"))
    assert peer.request_count == 5
    assert len(set(peer.issued)) == 5


async def test_a_client_credentials_binding_without_client_auth_fails_closed(
    engine: GrantEngine, peer: OAuthPeer, identity: CountingSource
) -> None:
    error = await failure(engine, exchange(peer, grant_type="client_credentials"))
    assert error.reason == "grant_misconfigured"
    error = await failure(engine, exchange(peer, grant_type="password"))
    assert error.reason == "grant_misconfigured"
    error = await failure(engine, exchange(peer, client_auth="client_secret_post"))
    assert error.reason == "grant_misconfigured"
    assert identity.audiences == []
    assert peer.request_count == 0


async def test_an_svid_for_another_audience_is_refused_by_the_endpoint(
    engine: GrantEngine, peer: OAuthPeer
) -> None:
    error = await failure(engine, exchange(peer, svid_audience="https://elsewhere.example"))
    assert error.reason == "token_endpoint_rejected"
    assert "error=invalid_request" in error.detail
    assert peer.rejections and "Audience" in peer.rejections[0]


@pytest.mark.parametrize(
    ("fields", "binding", "why"),
    [
        ({"issued_token_type": None}, {}, "no issued_token_type"),
        (
            {"issued_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
            {},
            "not an access token or a JWT",
        ),
        (
            {"issued_token_type": ACCESS_TOKEN_TYPE},
            {"requested_token_type": JWT_TOKEN_TYPE},
            "not the requested",
        ),
        ({"token_type": "N_A"}, {}, "token_type N_A"),
        ({"token_type": "DPoP"}, {}, "is not Bearer"),
        ({"token_type": None}, {}, "no token_type"),
    ],
)
async def test_an_answer_that_cannot_be_presented_is_malformed_and_not_cached(
    clocked_engine: GrantEngine,
    peer: OAuthPeer,
    clock: ManualClock,
    fields: dict[str, Any],
    binding: dict[str, Any],
    why: str,
) -> None:
    peer.success_fields = fields
    bound = exchange(peer, **binding)
    with pytest.raises(GrantError) as caught:
        await clocked_engine.obtain(bound)
    assert caught.value.reason == "token_malformed"
    assert why in caught.value.detail
    assert peer.issued[0] not in caught.value.detail
    peer.success_fields = {}
    clock.advance(15.0)  # a malformed answer is a permanent failure: 15 s
    assert (await clocked_engine.obtain(bound)).value == peer.issued[1]


async def test_not_applicable_token_type_is_fine_for_a_raw_header(
    engine: GrantEngine, peer: OAuthPeer
) -> None:
    """RFC 8693 §2.2.1: N_A says "not an OAuth access token"; placed raw in the binding's own
    header it is used as the credential it is, never claimed as a Bearer access token."""
    peer.success_fields = {"token_type": "N_A", "issued_token_type": JWT_TOKEN_TYPE}
    raw = exchange(peer, header_name="X-Service-Token", header_style="header")
    token = await engine.obtain(raw)
    assert token.value == peer.issued[0]


async def test_the_endpoint_enforces_resource_indicators(
    engine: GrantEngine, peer: OAuthPeer
) -> None:
    error = await failure(engine, exchange(peer, resource=("api",)))
    assert error.reason == "token_endpoint_rejected"
    assert "error=invalid_target" in error.detail


async def test_an_error_answer_never_echoes_the_subject_token(
    engine: GrantEngine, peer: OAuthPeer
) -> None:
    peer.answer_next(
        Answer(400, {"error": "invalid_request", "error_description": "bad {subject_token}"})
    )
    error = await failure(engine, exchange(peer))
    assert error.reason == "token_endpoint_rejected"
    sent = peer.forms()[0]["subject_token"][0]
    for segment in sent.split("."):
        assert segment[:12] not in error.detail
    assert "[redacted]" in error.detail
