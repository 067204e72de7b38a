"""The whole chain with real parts: curl → proxy → GrantEngine → local identity agent
(JWT-SVID over the Workload API) → loopback token endpoint (verifies the SVID with the
agent's JWKS) → token injected into the request the TLS upstream receives."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from grantbox.grants import GrantEngine
from tests.support.proxy_clients import curl
from tests.support.proxy_harness import endpoint, grant_profile, make_config, running_proxy
from tests.support.proxy_upstream import RecordingUpstream
from tests.support.token_endpoint import Behaviour, TokenEndpoint

from .conftest import LOOPBACK


async def test_token_from_the_real_issuer_is_injected_and_cached(
    engine: GrantEngine,
    issuer: TokenEndpoint,
    tls_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
) -> None:
    port = tls_upstream.port
    profile = grant_profile(
        "alpha",
        [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)],
        token_endpoint=issuer.token_url,
    )
    config = make_config(providers=[("alpha", profile)])
    async with running_proxy(config, engine, tmp_path, upstream_ca_file=upstream_ca_file) as rp:
        url = f"https://alpha.localhost:{port}/v1/whoami"
        first = await curl(
            "-H", "Authorization: Bearer forged", url, proxy=rp.url, cacert=rp.ca_file
        )
        second = await curl(url, proxy=rp.url, cacert=rp.ca_file)
    assert (first.status, second.status) == (200, 200), first.stderr
    (token,) = issuer.issued
    assert [r.header("authorization") for r in tls_upstream.requests] == [
        [f"Bearer {token}"],
        [f"Bearer {token}"],
    ]
    assert issuer.request_count == 1  # the second request used the cached token
    assert issuer.forms()[0]["audience"] == ["api://alpha"]
    text = json.dumps(rp.events)
    assert token not in text and "forged" not in text


async def test_token_endpoint_down_gives_502_with_reason_and_the_upstream_sees_nothing(
    engine: GrantEngine, tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    profile = grant_profile(
        "alpha",
        [endpoint("alpha.localhost", tls_upstream.port, allowed_ips=LOOPBACK)],
        token_endpoint=f"http://127.0.0.1:{closed}/realms/grantbox/protocol/openid-connect/token",
    )
    config = make_config(providers=[("alpha", profile)])
    async with running_proxy(config, engine, tmp_path, upstream_ca_file=upstream_ca_file) as rp:
        result = await curl(
            f"https://alpha.localhost:{tls_upstream.port}/x", proxy=rp.url, cacert=rp.ca_file
        )
    assert result.status == 502
    body = result.json()
    assert body["error"] == "token_grant_failed"
    assert body["reason"] == "token_endpoint_unreachable"
    assert str(closed) not in result.body.decode()
    assert tls_upstream.connections == 0


async def test_issuer_rejection_is_reported_as_rejected(
    engine: GrantEngine,
    issuer: TokenEndpoint,
    plain_upstream: RecordingUpstream,
    tmp_path: Path,
) -> None:
    issuer.behave(Behaviour.invalid_client("assertion signature did not verify"))
    profile = grant_profile(
        "alpha",
        [endpoint("alpha.localhost", plain_upstream.port, allowed_ips=LOOPBACK)],
        token_endpoint=issuer.token_url,
    )
    async with running_proxy(make_config(providers=[("alpha", profile)]), engine, tmp_path) as rp:
        result = await curl(f"http://alpha.localhost:{plain_upstream.port}/", proxy=rp.url)
    assert result.status == 502
    assert result.json()["reason"] == "token_endpoint_rejected"
    assert b"signature" not in result.body
    assert plain_upstream.connections == 0


async def test_two_grants_on_one_request_are_asked_for_together(
    engine: GrantEngine,
    issuer: TokenEndpoint,
    tls_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
) -> None:
    port = tls_upstream.port
    api = [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)]
    bearer = grant_profile("alpha", api, token_endpoint=issuer.token_url)
    keyed = grant_profile(
        "beta",
        api,
        token_endpoint=issuer.token_url,
        auth_style="header",
        header_name="X-Api-Key",
        audience="api://beta",
    )
    config = make_config(providers=[("alpha", bearer), ("beta", keyed)])
    async with running_proxy(config, engine, tmp_path, upstream_ca_file=upstream_ca_file) as rp:
        url = f"https://alpha.localhost:{port}/v1/whoami"
        issuer.behave(Behaviour.hang())
        held = asyncio.create_task(curl(url, proxy=rp.url, cacert=rp.ca_file))
        # Both token requests are open at once while the first is still unanswered; asked
        # one after the other, the second would never arrive and this would time out.
        await issuer.wait_for_requests(2)
        assert sorted(form["audience"][0] for form in issuer.forms()) == [
            "api://alpha",
            "api://beta",
        ]
        issuer.release()  # the held answers end without a response: both grants fail
        refused = await held
    assert refused.status == 502 and refused.json()["error"] == "token_grant_failed"
    # Both failed on the release, not on the token timeout: had the second been asked only
    # after the first gave up (a timeout), the first's failure would be the one reported.
    assert refused.json()["reason"] == "token_endpoint_error"
    assert tls_upstream.requests == []  # nothing forwarded, no partial injection
    assert issuer.request_count == 2
