"""Stored credentials through a real proxy: curl sends placeholders, recording upstreams
show what arrived. The bound endpoint receives the value; every other place a placeholder
can go is refused with ``credential_endpoint_mismatch`` and nothing reaches an upstream."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from urllib.parse import quote

import pytest

from grantbox.profiles import EffectiveConfig
from tests.support.proxy_clients import CurlResult, curl
from tests.support.proxy_harness import RecordingTokens, endpoint, make_config, running_proxy
from tests.support.proxy_raw_upstream import raw_upstream
from tests.support.proxy_upstream import RecordingUpstream
from tests.support.stored_credentials import stored_profile, with_values

from .conftest import LOOPBACK

VALUE = "ghp_S3cret/v&lue"


def config_for(tls_port: int, plain_port: int, *extra_ports: int) -> tuple[EffectiveConfig, str]:
    bound = dict(allowed_ips=LOOPBACK)
    profile = stored_profile(
        "svc",
        [
            endpoint("alpha.localhost", tls_port, path="/v1/**", **bound),
            endpoint("alpha.localhost", tls_port, path="/redirect", **bound),
            endpoint(
                "alpha.localhost", tls_port, path="/form/**", credential_body_rewrite=True, **bound
            ),
            *(endpoint("alpha.localhost", port, path="/v1/**", **bound) for port in extra_ports),
        ],
        env_var="SVC_TOKEN",
    )
    policy = [
        endpoint(host, port, allowed_ips=LOOPBACK)
        for host in ("alpha.localhost", "beta.localhost")
        for port in (tls_port, plain_port, *extra_ports)
    ]
    config, placeholders = with_values(
        make_config(policy=policy, providers=[("svc", profile)]), {"svc:key": VALUE}
    )
    return config, placeholders["svc:key"]


def refused(result: CurlResult) -> None:
    assert result.status == 403, (result.status, result.body, result.stderr)
    assert result.json()["error"] == "credential_endpoint_mismatch"
    assert VALUE.encode() not in result.body and quote(VALUE, safe="").encode() not in result.body


async def test_the_bound_endpoint_gets_the_value_and_nothing_else_does(
    tls_upstream: RecordingUpstream,
    plain_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
) -> None:
    tls, plain = tls_upstream.port, plain_upstream.port
    config, p = config_for(tls, plain)
    alpha = f"https://alpha.localhost:{tls}"
    async with running_proxy(
        config, RecordingTokens(), tmp_path, upstream_ca_file=upstream_ca_file
    ) as rp:

        async def run(*args: str) -> CurlResult:
            return await curl(*args, proxy=rp.url, cacert=rp.ca_file)

        bound = await run("-H", f"Authorization: Bearer {p}", f"{alpha}/v1/user?token={p}")
        basic = await run("-u", f"me:{p}", f"{alpha}/v1/basic")
        form = await run(
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            f'{{"t":"{p}"}}',
            f"{alpha}/form/x",
        )
        assert (bound.status, basic.status, form.status) == (200, 200, 200), bound.stderr
        arrived = len(tls_upstream.requests)

        refusals = [
            # another host, another path, another port
            await run("-H", f"Authorization: Bearer {p}", f"https://beta.localhost:{tls}/v1/x"),
            await run("-H", f"X-Key: {p}", f"{alpha}/v2/x"),
            await run(f"http://alpha.localhost:{plain}/v1/x?token={p}"),
            # a query string to an unbound host (forward proxy, cleartext)
            await run(f"http://beta.localhost:{plain}/search?token={p}"),
            # a Basic header where the credential is not bound
            await run("-u", f"me:{p}", f"https://beta.localhost:{tls}/v1/x"),
            # a body where the endpoint did not opt in
            await run("--data-binary", f"token={p}", f"{alpha}/v1/x"),
            # a redirect target: the agent follows a 302 to another host with the header
            await run(
                "-L", "--location-trusted", "-H", f"Authorization: Bearer {p}",
                f"{alpha}/redirect?to=https://beta.localhost:{tls}/v1/landing",
            ),
        ]  # fmt: skip
    for result in refusals:
        refused(result)

    first, second, third = tls_upstream.requests[:3]
    assert first.target == f"/v1/user?token={quote(VALUE, safe='')}"
    assert first.header("authorization") == [f"Bearer {VALUE}"]
    (auth,) = second.header("authorization")
    assert base64.b64decode(auth.split()[1]).decode() == f"me:{VALUE}"
    assert (
        third.sha256
        == hashlib.sha256(json.dumps({"t": VALUE}, separators=(",", ":")).encode()).hexdigest()
    )
    # Only the first leg of the redirect reached an upstream; no refused request did.
    assert [r.target for r in tls_upstream.requests[arrived:]] == [
        f"/redirect?to=https://beta.localhost:{tls}/v1/landing"
    ]
    assert plain_upstream.requests == [] and plain_upstream.connections == 0
    assert p.encode() not in tls_upstream.received  # never passed on unreplaced
    shown = json.dumps(rp.events)
    assert VALUE not in shown and quote(VALUE, safe="") not in shown
    (user,) = [e for e in rp.events if e["http_request"]["url"]["path"] == "/v1/user"]
    assert user["unmapped"]["credentials"] == ["svc:key"]
    mismatches = [e for e in rp.events if e.get("status_code") == "credential_endpoint_mismatch"]
    assert len(mismatches) == len(refusals)


async def test_responses_are_never_rewritten(tmp_path: Path) -> None:
    """An upstream that answers with the placeholder gives the agent the placeholder."""
    async with raw_upstream(b"") as upstream:
        config, p = config_for(1, 2, upstream.port)
        body = json.dumps({"echo": p}).encode()
        upstream.answer = (
            f"HTTP/1.1 200 OK\r\nX-Echo: {p}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
        async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
            result = await curl(
                "-i", "-H", f"Authorization: Bearer {p}",
                f"http://alpha.localhost:{upstream.port}/v1/echo", proxy=rp.url,
            )  # fmt: skip
    assert result.status == 200, result.stderr
    assert f"Bearer {VALUE}".encode() in bytes(upstream.received)
    assert body in result.body and VALUE.encode() not in result.body
    assert f"x-echo: {p}".encode() in result.body.lower()


@pytest.mark.parametrize("style", ["bearer", "query"])
async def test_a_placed_credential_is_added_when_the_agent_sends_none(
    style: str, tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    port = tls_upstream.port
    profile = stored_profile(
        "svc",
        [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)],
        auth_style=style,
        query_param="api_key" if style == "query" else "",
    )
    config, _ = with_values(make_config(providers=[("svc", profile)]), {"svc:key": VALUE})
    async with running_proxy(
        config, RecordingTokens(), tmp_path, upstream_ca_file=upstream_ca_file
    ) as rp:
        result = await curl(
            f"https://alpha.localhost:{port}/v1/x?a=1", proxy=rp.url, cacert=rp.ca_file
        )
    assert result.status == 200, result.stderr
    (seen,) = tls_upstream.requests
    if style == "bearer":
        assert seen.header("authorization") == [f"Bearer {VALUE}"]
    else:
        assert seen.target == "/v1/x?a=1&api_key=ghp_S3cret%2Fv%26lue"
    assert VALUE not in json.dumps(rp.events)
