"""One token request end to end over loopback: real identity agent, real Workload API
client, real HTTP, and a token endpoint that verifies the SVID with the agent's JWKS."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
import trustme
from prometheus_client import CollectorRegistry

from grantbox.grants import GrantEngine, GrantError, TokenEndpointClient
from grantbox.identity import WorkloadIdentityClient
from grantbox.identity_agent import IdentityAgent
from grantbox.profiles import JWT_BEARER, GrantBinding
from tests.support.token_endpoint import (
    OMIT,
    TOKEN_PATH,
    Behaviour,
    TokenEndpoint,
    running_token_endpoint,
)

from .bindings import make_binding
from .conftest import (
    SANDBOX_ID,
    TRUST_DOMAIN,
    CountingSource,
    ManualClock,
    binding_for,
)


async def failure(engine: GrantEngine, issuer: TokenEndpoint, **overrides: object) -> GrantError:
    with pytest.raises(GrantError) as caught:
        await engine.obtain(binding_for(issuer, **overrides))
    return caught.value


async def test_wire_format_is_exactly_client_credentials_with_the_svid(
    engine: GrantEngine, issuer: TokenEndpoint, identity: CountingSource
) -> None:
    binding = binding_for(issuer, audience="alpha", scopes=("alpha", "read"))
    token = await engine.obtain(binding)

    assert token.value == issuer.issued[0]
    assert issuer.subjects == [SANDBOX_ID]  # the endpoint verified the SVID
    assert issuer.forms() == [
        {
            "grant_type": ["client_credentials"],
            "client_assertion_type": ["urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"],
            "client_assertion": [identity.tokens[0]],
            "audience": ["alpha"],
            "scope": ["alpha read"],
        }
    ]
    (request,) = issuer.token_requests
    assert request.header("authorization") == []
    assert request.header("content-type") == ["application/x-www-form-urlencoded"]
    assert identity.audiences == [issuer.issuer]
    claims = jwt.decode(identity.tokens[0], options={"verify_signature": False})
    assert claims["aud"] in (issuer.issuer, [issuer.issuer])


async def test_audience_and_scope_are_left_out_when_unset(
    engine: GrantEngine, issuer: TokenEndpoint
) -> None:
    await engine.obtain(binding_for(issuer, audience="", scopes=()))
    assert sorted(issuer.forms()[0]) == ["client_assertion", "client_assertion_type", "grant_type"]


async def test_every_token_request_gets_a_fresh_svid(
    clocked_engine: GrantEngine, issuer: TokenEndpoint, identity: CountingSource, clock: ManualClock
) -> None:
    issuer.behave(Behaviour.grant(expires_in=31))  # cached for 1 s
    binding = binding_for(issuer)
    await clocked_engine.obtain(binding)
    clock.advance(1.0)
    await clocked_engine.obtain(binding)
    await clocked_engine.obtain(binding_for(issuer, audience="beta"))
    assert issuer.request_count == 3
    assert len(identity.audiences) == 3
    assert [form["client_assertion"] for form in issuer.forms()] == [[t] for t in identity.tokens]


async def test_endpoint_refuses_an_svid_with_another_audience(
    engine: GrantEngine, issuer: TokenEndpoint
) -> None:
    error = await failure(engine, issuer, svid_audience=issuer.token_url)
    assert error.reason == "token_endpoint_rejected"
    assert issuer.subjects == []
    assert issuer.rejections
    assert "error=invalid_client" in error.detail


async def test_endpoint_refuses_the_wrong_assertion_type(
    engine: GrantEngine, issuer: TokenEndpoint
) -> None:
    error = await failure(engine, issuer, assertion_type=str(JWT_BEARER))
    assert error.reason == "token_endpoint_rejected"
    assert issuer.subjects == []


async def test_redirect_is_not_followed(engine: GrantEngine, issuer: TokenEndpoint) -> None:
    async with running_token_endpoint(oidc_url=None, trust_domain=TRUST_DOMAIN) as elsewhere:
        issuer.behave(Behaviour.redirect(elsewhere.token_url, status=302))
        error = await failure(engine, issuer)
        issuer.behave(Behaviour.redirect(elsewhere.token_url, status=307))
        error307 = await failure(engine, issuer, audience="other")
        assert elsewhere.http_requests == 0
    assert error.reason == "token_endpoint_error"
    assert "302 Found (redirects are not followed)" in error.detail
    assert error307.reason == "token_endpoint_error"
    assert issuer.request_count == 2


@pytest.mark.parametrize("behaviour", [Behaviour.hang(), Behaviour.trickle(interval=0.05)])
async def test_hanging_or_trickling_endpoint_times_out_within_total_timeout(
    identity: CountingSource, issuer: TokenEndpoint, behaviour: Behaviour
) -> None:
    issuer.behave(behaviour)
    engine = GrantEngine(identity, total_timeout=1.0, registry=CollectorRegistry())
    started = time.monotonic()
    try:
        error = await failure(engine, issuer)
    finally:
        await engine.aclose()
    elapsed = time.monotonic() - started
    assert error.reason == "token_endpoint_timeout"
    assert "within 1 s" in error.detail
    assert 0.9 <= elapsed < 4.0  # generous bound: the configured second, not httpx's read timeout


@pytest.mark.parametrize("declare_length", [True, False])
async def test_five_megabyte_answer_fails(
    engine: GrantEngine, issuer: TokenEndpoint, declare_length: bool
) -> None:
    issuer.behave(Behaviour.huge(5 * 1024 * 1024, declare_length=declare_length))
    error = await failure(engine, issuer)
    assert error.reason == "token_endpoint_error"
    assert "larger than 65536 bytes" in error.detail


async def test_content_encoded_answer_is_refused(
    engine: GrantEngine, issuer: TokenEndpoint
) -> None:
    issuer.behave(Behaviour.grant().with_headers(("content-encoding", "gzip")))
    error = await failure(engine, issuer)
    assert error.reason == "token_endpoint_error"
    assert "content-encoding" in error.detail


@pytest.mark.parametrize(
    "bad", ["SECRET\r\nX-Injected: yes", "SECRET value", "SECR\u00c9T", "SECRET\x00"]
)
async def test_malformed_token_fails_and_is_not_cached(
    clocked_engine: GrantEngine, issuer: TokenEndpoint, clock: ManualClock, bad: str
) -> None:
    issuer.behave(Behaviour.grant(access_token=bad))
    binding = binding_for(issuer)
    with pytest.raises(GrantError) as caught:
        await clocked_engine.obtain(binding)
    assert caught.value.reason == "token_malformed"
    assert "SECR" not in str(caught.value)
    assert "SECR" not in repr(caught.value)

    issuer.behave(Behaviour.grant())
    clock.advance(15.0)  # past the first backoff step for a permanent failure
    good = await clocked_engine.obtain(binding)
    assert good.value == issuer.issued[1]
    assert issuer.request_count == 2


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ({"access_token": "abc", "expires_in": "300"}, "expires_in is not an integer"),
        ({"token": "abc"}, "no string access_token"),
        (b"access_token=abc", "not JSON"),
    ],
)
async def test_answer_that_is_not_a_token_answer_is_malformed(
    engine: GrantEngine, issuer: TokenEndpoint, answer: dict[str, str] | bytes, why: str
) -> None:
    issuer.behave(Behaviour.answer(200, answer))
    error = await failure(engine, issuer)
    assert error.reason == "token_malformed"
    assert why in error.detail


async def test_invalid_client_gives_rejected_with_only_sanitised_fields(
    engine: GrantEngine, issuer: TokenEndpoint
) -> None:
    issuer.behave(Behaviour.invalid_client("svid \x1b[2Jexpired\r\nX-Evil: 1" + "!" * 400))
    error = await failure(engine, issuer)
    assert error.reason == "token_endpoint_rejected"
    cleaned = ("svid [2Jexpired" + "X-Evil: 1" + "!" * 400)[:256]
    assert error.detail == (
        "token endpoint answered 401 Unauthorized: "
        f"error=invalid_client; error_description={cleaned}"
    )


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_reports_status_and_never_the_body(
    engine: GrantEngine, issuer: TokenEndpoint, status: int
) -> None:
    issuer.behave(Behaviour.server_error(status))
    error = await failure(engine, issuer)
    assert error.reason == "token_endpoint_error"
    assert error.detail.startswith(f"token endpoint answered {status} ")
    assert "exploded" not in error.detail
    assert "secret" not in error.detail


async def test_proxy_environment_is_ignored(
    engine: GrantEngine, issuer: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_proxy = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there any more
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    # Control: an ordinary client honours the variables and so cannot get through.
    async with httpx.AsyncClient() as ordinary:
        with pytest.raises((httpx.ProxyError, httpx.ConnectError)):
            await ordinary.post(issuer.token_url, data={"grant_type": "client_credentials"})
    assert issuer.http_requests == 0

    token = await engine.obtain(binding_for(issuer))
    assert token.value == issuer.issued[0]


async def test_disallowed_endpoint_fails_before_any_svid_is_minted(
    engine: GrantEngine, identity: CountingSource
) -> None:
    for url in ("http://issuer.example/token", "ftp://127.0.0.1/token", "/token"):
        binding = binding_for_url(url)
        with pytest.raises(GrantError) as caught:
            await engine.obtain(binding)
        assert caught.value.reason == "grant_misconfigured"
    assert identity.audiences == []


async def test_binding_without_svid_audience_is_misconfigured(
    engine: GrantEngine, issuer: TokenEndpoint, identity: CountingSource
) -> None:
    error = await failure(engine, issuer, svid_audience="")
    assert error.reason == "grant_misconfigured"
    assert identity.audiences == []
    assert issuer.http_requests == 0


def binding_for_url(url: str) -> GrantBinding:
    return make_binding(token_endpoint=url, svid_audience="https://issuer.example")


async def test_unreachable_endpoint(engine: GrantEngine, issuer: TokenEndpoint) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    error = await failure(engine, issuer, token_endpoint=f"http://127.0.0.1:{port}{TOKEN_PATH}")
    assert error.reason == "token_endpoint_unreachable"
    assert f"127.0.0.1:{port}" in error.detail


async def test_expires_in_decides_how_long_the_token_is_served(
    clocked_engine: GrantEngine, issuer: TokenEndpoint, clock: ManualClock
) -> None:
    issuer.behave(Behaviour.grant(expires_in=90))  # served for 60 s
    binding = binding_for(issuer)
    first = await clocked_engine.obtain(binding)
    clock.advance(59.0)
    assert await clocked_engine.obtain(binding_for(issuer)) == first
    issuer.behave(Behaviour.grant(expires_in=OMIT))  # absent: served for 270 s
    clock.advance(1.0)
    second = await clocked_engine.obtain(binding)
    assert second != first
    clock.advance(269.0)
    assert await clocked_engine.obtain(binding) == second
    clock.advance(1.0)
    assert (await clocked_engine.obtain(binding)).value == issuer.issued[2]


async def test_explicit_cache_ttl_cannot_outlive_expires_in(
    clocked_engine: GrantEngine, issuer: TokenEndpoint, clock: ManualClock
) -> None:
    issuer.behave(Behaviour.grant(expires_in=20))
    binding = binding_for(issuer, cache_ttl_seconds=3600)
    first = await clocked_engine.obtain(binding)
    clock.advance(19.9)
    assert await clocked_engine.obtain(binding) == first
    clock.advance(0.1)
    assert await clocked_engine.obtain(binding) != first


async def test_identity_unavailable_when_the_workload_socket_is_gone(
    issuer: TokenEndpoint, tmp_path: Path
) -> None:
    client = WorkloadIdentityClient(str(tmp_path / "missing.sock"), call_timeout=0.3, deadline=0.6)
    engine = GrantEngine(client, registry=CollectorRegistry())
    try:
        error = await failure(engine, issuer)
    finally:
        await engine.aclose()
        await client.aclose()
    assert error.reason == "workload_identity_unavailable"
    assert issuer.http_requests == 0


async def test_identity_denied_when_the_agent_refuses_the_caller(
    agent: IdentityAgent, issuer: TokenEndpoint
) -> None:
    socket_path = agent.add_workload("locked", "/grantbox/sandbox/locked", uids=[65534])
    client = WorkloadIdentityClient(str(socket_path), call_timeout=0.5, deadline=1.0)
    engine = GrantEngine(client, registry=CollectorRegistry())
    try:
        error = await failure(engine, issuer)
    finally:
        await engine.aclose()
        await client.aclose()
    assert error.reason == "workload_identity_denied"
    assert issuer.http_requests == 0


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_issuer(agent: IdentityAgent, ca: trustme.CA) -> AsyncIterator[TokenEndpoint]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    assert agent.oidc_url is not None
    async with running_token_endpoint(
        oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN, ssl_context=server_context
    ) as endpoint:
        yield endpoint


async def test_https_endpoint_with_a_trusted_ca(
    identity: CountingSource, tls_issuer: TokenEndpoint, ca: trustme.CA
) -> None:
    trusted = GrantEngine(
        identity,
        client=TokenEndpointClient(extra_ca_pem=ca.cert_pem.bytes().decode()),
        registry=CollectorRegistry(),
    )
    untrusted = GrantEngine(identity, registry=CollectorRegistry())
    try:
        assert tls_issuer.token_url.startswith("https://")
        token = await trusted.obtain(binding_for(tls_issuer))
        assert token.value == tls_issuer.issued[0]
        with pytest.raises(GrantError) as caught:
            await untrusted.obtain(binding_for(tls_issuer))
        assert caught.value.reason == "token_endpoint_unreachable"
        assert "CERTIFICATE_VERIFY_FAILED" in caught.value.detail
    finally:
        await trusted.aclose()
        await untrusted.aclose()
    assert tls_issuer.request_count == 1


async def test_ipv6_loopback_endpoint(
    engine: GrantEngine, agent: IdentityAgent, identity: CountingSource
) -> None:
    assert agent.oidc_url is not None
    async with running_token_endpoint(
        oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN, host="::1"
    ) as v6:
        assert v6.token_url.startswith("http://[::1]:")
        token = await engine.obtain(binding_for(v6))
        assert token.value == v6.issued[0]
        assert v6.subjects == [SANDBOX_ID]
