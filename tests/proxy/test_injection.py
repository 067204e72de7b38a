"""Token injection through the running proxy, with real clients and real upstreams."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantbox.profiles import Profile
from tests.support.proxy_clients import connection, curl, read_reply, tunnel
from tests.support.proxy_harness import (
    RecordingTokens,
    endpoint,
    grant_profile,
    make_config,
    running_proxy,
)
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK


def _beta(port: int) -> Profile:
    return grant_profile("beta", [endpoint("beta.localhost", port, allowed_ips=LOOPBACK)])


def _alpha(port: int, **extra: Any) -> Profile:
    return grant_profile(
        "alpha", [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)], **extra
    )


async def test_curl_https_proxy_replaces_the_agents_authorization(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    config = make_config(providers=[("alpha", _alpha(tls_upstream.port))])
    tokens = RecordingTokens(token="fresh.token-1")
    async with running_proxy(config, tokens, tmp_path, upstream_ca_file=upstream_ca_file) as rp:
        result = await curl(
            "-H",
            "Authorization: Bearer agent-stale",
            "-H",
            "authorization: Basic YWdlbnQ6c2VjcmV0",
            f"https://alpha.localhost:{tls_upstream.port}/v1/items?page=2",
            proxy=rp.url,
            cacert=rp.ca_file,
        )
    assert result.status == 200, result.stderr
    seen = tls_upstream.requests[-1]
    assert seen.target == "/v1/items?page=2"
    assert seen.header("authorization") == ["Bearer fresh.token-1"]
    assert result.json()["tls"] is True
    assert [b.id for b in tokens.asked] == [f"alpha:token@alpha.localhost:{tls_upstream.port}/**"]
    # the token never shows up in events; the agent's header is redacted
    text = json.dumps(rp.events)
    assert "fresh.token-1" not in text and "agent-stale" not in text
    assert rp.metric("grantbox_proxy_injections_total", outcome="injected") == 1


async def test_whitespace_before_colon_copy_is_removed_too(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    config = make_config(providers=[("alpha", _alpha(tls_upstream.port))])
    async with (
        running_proxy(
            config, RecordingTokens(token="fresh"), tmp_path, upstream_ca_file=upstream_ca_file
        ) as rp,
        tunnel(rp.port, "alpha.localhost", tls_upstream.port, rp.ca_file) as (r, w),
    ):
        w.write(
            f"GET /x HTTP/1.1\r\nHost: alpha.localhost:{tls_upstream.port}\r\n"
            "Authorization : Bearer spaced-stale\r\n"
            "AUTHORIZATION: Bearer upper-stale\r\n\r\n".encode()
        )
        reply = await read_reply(r)
    assert reply.status == 200
    (seen,) = tls_upstream.requests
    assert seen.header("authorization") == ["Bearer fresh"]
    assert all("stale" not in v for _, v in seen.headers)


async def test_spaced_header_that_is_not_being_replaced_is_refused(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    config = make_config(
        policy=[endpoint("alpha.localhost", tls_upstream.port, allowed_ips=LOOPBACK)]
    )
    tokens = RecordingTokens()
    async with (
        running_proxy(config, tokens, tmp_path, upstream_ca_file=upstream_ca_file) as rp,
        tunnel(rp.port, "alpha.localhost", tls_upstream.port, rp.ca_file) as (r, w),
    ):
        w.write(
            f"GET /x HTTP/1.1\r\nHost: alpha.localhost:{tls_upstream.port}\r\n"
            "Authorization : Bearer agent\r\n\r\n".encode()
        )
        reply = await read_reply(r)
    assert reply.status == 400 and reply.json()["error"] == "invalid_request"
    assert tls_upstream.connections == 0 and not tokens.asked


async def test_header_style_places_the_raw_token_and_keeps_other_authorization(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    profile = _alpha(tls_upstream.port, auth_style="header", header_name="X-Api-Token")
    config = make_config(providers=[("alpha", profile)])
    async with running_proxy(
        config, RecordingTokens(token="raw-tok"), tmp_path, upstream_ca_file=upstream_ca_file
    ) as rp:
        context = ssl.create_default_context(cafile=str(rp.ca_file))
        async with httpx.AsyncClient(proxy=rp.url, verify=context) as client:
            response = await client.get(
                f"https://alpha.localhost:{tls_upstream.port}/",
                headers={"Authorization": "Bearer agent-own", "x-api-token": "agent-copy"},
            )
    assert response.status_code == 200
    seen = tls_upstream.requests[-1]
    assert seen.header("x-api-token") == ["raw-tok"]
    assert seen.header("authorization") == ["Bearer agent-own"]
    text = json.dumps(rp.events)
    assert "raw-tok" not in text and "agent-copy" not in text and "agent-own" not in text


async def test_keep_alive_unbound_request_gets_no_token_and_the_next_bound_one_does(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    port = tls_upstream.port
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", port, path="/v1/**", allowed_ips=LOOPBACK)]
    )
    config = make_config(
        policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)],
        providers=[("alpha", profile)],
    )
    tokens = RecordingTokens(token="bound-tok")
    async with running_proxy(config, tokens, tmp_path, upstream_ca_file=upstream_ca_file) as rp:
        context = ssl.create_default_context(cafile=str(rp.ca_file))
        async with httpx.AsyncClient(proxy=rp.url, verify=context) as client:
            first = await client.get(
                f"https://alpha.localhost:{port}/public", headers={"Authorization": "Bearer mine"}
            )
            second = await client.get(f"https://alpha.localhost:{port}/v1/data")
            third = await client.get(f"https://alpha.localhost:{port}/public")
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 200]
    unbound, bound, again = tls_upstream.requests
    assert unbound.header("authorization") == ["Bearer mine"]  # no binding: untouched
    assert bound.header("authorization") == ["Bearer bound-tok"]
    assert again.header("authorization") == []
    assert len(tokens.asked) == 1
    assert tls_upstream.connections == 1  # one tunnel, one upstream connection, kept alive


async def test_plain_http_to_loopback_gets_a_token(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    config = make_config(providers=[("alpha", _alpha(plain_upstream.port))])
    async with running_proxy(config, RecordingTokens(token="t1"), tmp_path) as rp:
        result = await curl(f"http://alpha.localhost:{plain_upstream.port}/x", proxy=rp.url)
    assert result.status == 200
    (seen,) = plain_upstream.requests
    assert seen.header("authorization") == ["Bearer t1"]
    assert seen.header("host") == [f"alpha.localhost:{plain_upstream.port}"]
    assert seen.target == "/x"


async def test_update_applies_to_the_next_request_on_a_kept_alive_connection(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    port = tls_upstream.port
    policy_only = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    with_grant = make_config(
        policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)],
        providers=[("alpha", _alpha(port))],
    )
    tokens = RecordingTokens(token="after-update")
    async with running_proxy(
        policy_only, tokens, tmp_path, upstream_ca_file=upstream_ca_file
    ) as rp:
        context = ssl.create_default_context(cafile=str(rp.ca_file))
        async with httpx.AsyncClient(proxy=rp.url, verify=context) as client:
            await client.get(f"https://alpha.localhost:{port}/a")
            rp.proxy.update(with_grant)
            await client.get(f"https://alpha.localhost:{port}/b")
            rp.proxy.update(make_config())
            denied = await client.get(f"https://alpha.localhost:{port}/c")
    before, after = tls_upstream.requests
    assert before.header("authorization") == []
    assert after.header("authorization") == ["Bearer after-update"]
    assert denied.status_code == 403 and denied.json()["error"] == "policy_denied"
    assert tokens.bindings is not None and len(tokens.bindings) == 0


async def test_chunked_upload_head_and_chunked_response_relay_intact(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    port = tls_upstream.port
    config = make_config(providers=[("alpha", _alpha(port))])
    body = tmp_path / "body.bin"
    body.write_bytes(b"x" * 300_000)
    async with running_proxy(
        config, RecordingTokens(token="t"), tmp_path, upstream_ca_file=upstream_ca_file
    ) as rp:
        chunked = await curl(
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            f"@{body}",
            f"https://alpha.localhost:{port}/chunked/upload",
            proxy=rp.url,
            cacert=rp.ca_file,
        )
        head = await curl(
            "-I", f"https://alpha.localhost:{port}/h", proxy=rp.url, cacert=rp.ca_file
        )
    assert chunked.status == 200 and chunked.json()["body_bytes"] == 300_000
    assert head.status == 200
    upload, probe = tls_upstream.requests
    assert upload.header("transfer-encoding") == ["chunked"] and upload.body_bytes == 300_000
    assert probe.method == "HEAD" and probe.header("authorization") == ["Bearer t"]


async def test_redirects_are_not_followed_and_the_next_host_is_decided_afresh(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(providers=[("alpha", _alpha(port))])
    tokens = RecordingTokens(token="t")
    async with running_proxy(config, tokens, tmp_path) as rp:
        target = f"http://beta.localhost:{port}/steal"
        result = await curl(
            "-L", f"http://alpha.localhost:{port}/redirect?to={target}", proxy=rp.url
        )
    assert result.status == 403 and result.json()["error"] == "policy_denied"
    assert [r.target for r in plain_upstream.requests] == [f"/redirect?to={target}"]
    assert len(tokens.asked) == 1


async def test_an_upstream_that_dropped_an_idle_connection_is_redialled(tmp_path: Path) -> None:
    connections = 0

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # no Connection: close - it just hangs up while idle

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    request = f"GET http://alpha.localhost:{port}/ HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    try:
        async with (
            running_proxy(config, RecordingTokens(), tmp_path) as rp,
            connection(rp.port) as (reader, writer),
        ):
            replies = []
            for _ in range(2):
                writer.write(request)
                await writer.drain()
                replies.append(await read_reply(reader))
                await asyncio.sleep(0.2)
    finally:
        server.close()
    assert [r.status for r in replies] == [200, 200]
    assert connections == 2


async def test_clients_configured_through_the_environment(
    tls_upstream: RecordingUpstream,
    plain_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a sandbox gives its agent: HTTP(S)_PROXY and a CA bundle, nothing else."""
    config = make_config(
        providers=[("alpha", _alpha(tls_upstream.port)), ("beta", _beta(plain_upstream.port))]
    )
    async with running_proxy(
        config, RecordingTokens(token="env"), tmp_path, upstream_ca_file=upstream_ca_file
    ) as rp:
        tls_url = f"https://alpha.localhost:{tls_upstream.port}/env"
        plain_url = f"http://beta.localhost:{plain_upstream.port}/env"
        by_curl = await curl(tls_url, proxy=rp.url, cacert=rp.ca_file, via_environment=True)
        by_curl_plain = await curl(plain_url, proxy=rp.url, via_environment=True)
        for name in (
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "NO_PROXY",
            "no_proxy",
            "ALL_PROXY",
            "all_proxy",
        ):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", rp.url)
        monkeypatch.setenv("HTTP_PROXY", rp.url)
        monkeypatch.setenv("SSL_CERT_FILE", str(rp.ca_file))
        async with httpx.AsyncClient(trust_env=True) as client:
            by_httpx = await client.get(tls_url)
            by_httpx_plain = await client.get(plain_url)
    assert [by_curl.status, by_curl_plain.status] == [200, 200], by_curl.stderr
    assert [by_httpx.status_code, by_httpx_plain.status_code] == [200, 200]
    assert [r.header("authorization") for r in tls_upstream.requests] == [["Bearer env"]] * 2
    assert [r.header("authorization") for r in plain_upstream.requests] == [["Bearer env"]] * 2
