"""Every deny code, destination validation (rebinding included), raw tunnels and listeners."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from grantbox.grants import TokenEndpointUnreachable
from grantbox.proxy import EgressProxy, IPAddress, SystemResolver, parse_overrides
from tests.support.proxy_clients import curl, parse_replies, read_all, send_raw
from tests.support.proxy_harness import (
    RecordingTokens,
    endpoint,
    grant_profile,
    make_config,
    running_proxy,
)
from tests.support.proxy_upstream import RecordingUpstream, running_upstream

from .conftest import LOOPBACK


async def _connect_status(proxy_port: int, host: str, port: int) -> tuple[int, dict[str, str]]:
    raw = await send_raw(
        proxy_port, f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    )
    replies = parse_replies(raw, [b"CONNECT"])
    assert len(replies) == 1, raw
    return replies[0].status, replies[0].json()


async def test_policy_denied_for_connect_and_forward(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    config = make_config(
        policy=[endpoint("alpha.localhost", plain_upstream.port, allowed_ips=LOOPBACK)]
    )
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        status, body = await _connect_status(rp.port, "beta.localhost", plain_upstream.port)
        assert (status, body["error"]) == (403, "policy_denied")
        status, body = await _connect_status(rp.port, "alpha.localhost", plain_upstream.port + 1)
        assert (status, body["error"]) == (403, "policy_denied")
        result = await curl(f"http://beta.localhost:{plain_upstream.port}/", proxy=rp.url)
        assert result.status == 403 and result.json()["error"] == "policy_denied"
    assert plain_upstream.connections == 0
    assert rp.metric("grantbox_proxy_requests_total", decision="denied", code="policy_denied") == 3


async def test_l7_rules_deny_methods(plain_upstream: RecordingUpstream, tmp_path: Path) -> None:
    config = make_config(
        policy=[
            endpoint(
                "alpha.localhost",
                plain_upstream.port,
                allowed_ips=LOOPBACK,
                protocol="rest",
                access="read-only",
            )
        ]
    )
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        url = f"http://alpha.localhost:{plain_upstream.port}/items"
        assert (await curl(url, proxy=rp.url)).status == 200
        denied = await curl("-X", "POST", "-d", "x=1", url, proxy=rp.url)
    assert denied.status == 403 and denied.json()["error"] == "policy_denied"
    assert [r.method for r in plain_upstream.requests] == ["GET"]


async def test_audit_enforcement_lets_it_through_and_records_the_would_be_denial(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    config = make_config(
        policy=[
            endpoint(
                "alpha.localhost",
                plain_upstream.port,
                allowed_ips=LOOPBACK,
                protocol="rest",
                access="read-only",
                enforcement="audit",
            )
        ]
    )
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        result = await curl(
            "-X", "DELETE", f"http://alpha.localhost:{plain_upstream.port}/items/1", proxy=rp.url
        )
    assert result.status == 200
    assert [r.method for r in plain_upstream.requests] == ["DELETE"]
    (audit,) = [e for e in rp.events if e.get("unmapped", {}).get("enforcement") == "audit"]
    assert audit["activity_id"] == 2 and "would deny" in audit["message"]


async def test_ssrf_denied_for_metadata_and_unlisted_loopback(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(
        policy=[
            endpoint("meta.example", 80),
            endpoint("meta.example", 443),
            endpoint("alpha.localhost", port),  # no allowed_ips: loopback refused
        ]
    )
    resolver = SystemResolver(parse_overrides(["meta.example=169.254.169.254"]))
    async with running_proxy(config, RecordingTokens(), tmp_path, resolver=resolver) as rp:
        result = await curl("http://meta.example/latest/meta-data/", proxy=rp.url)
        assert result.status == 403 and result.json()["error"] == "ssrf_denied"
        status, body = await _connect_status(rp.port, "meta.example", 443)
        assert (status, body["error"]) == (403, "ssrf_denied")
        result = await curl(f"http://alpha.localhost:{port}/", proxy=rp.url)
        assert result.status == 403 and result.json()["error"] == "ssrf_denied"
    assert plain_upstream.connections == 0
    ssrf = [e for e in rp.events if e.get("status_code") == "ssrf_denied"]
    assert len(ssrf) == 3 and "metadata" in ssrf[0]["status_detail"]


async def test_cleartext_credential_refused_for_non_loopback_hosts(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    profile = grant_profile("alpha", [endpoint("api.example", port, allowed_ips=LOOPBACK)])
    config = make_config(providers=[("alpha", profile)])
    tokens = RecordingTokens()
    resolver = SystemResolver(parse_overrides(["api.example=127.0.0.1"]))
    async with running_proxy(config, tokens, tmp_path, resolver=resolver) as rp:
        result = await curl(f"http://api.example:{port}/", proxy=rp.url)
    assert result.status == 403 and result.json()["error"] == "cleartext_credential_refused"
    assert tokens.asked == [] and plain_upstream.connections == 0


async def test_invalid_request_for_encoded_slashes_and_dot_segments(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    config = make_config(
        policy=[endpoint("alpha.localhost", plain_upstream.port, allowed_ips=LOOPBACK)]
    )
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        for path in ("/public/%2e%2e/admin", "/a%2Fb", "/public/../admin"):
            result = await curl(
                "--path-as-is", f"http://alpha.localhost:{plain_upstream.port}{path}", proxy=rp.url
            )
            assert result.status == 400 and result.json()["error"] == "invalid_request", path
    assert plain_upstream.connections == 0


async def test_token_grant_failed_answers_502_with_reason_and_nothing_goes_upstream(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", plain_upstream.port, allowed_ips=LOOPBACK)]
    )
    tokens = RecordingTokens(
        fail=TokenEndpointUnreachable("connect to issuer.internal:8443 refused")
    )
    async with running_proxy(make_config(providers=[("alpha", profile)]), tokens, tmp_path) as rp:
        result = await curl(f"http://alpha.localhost:{plain_upstream.port}/x", proxy=rp.url)
    assert result.status == 502
    assert result.json()["error"] == "token_grant_failed"
    assert result.json()["reason"] == "token_endpoint_unreachable"
    assert b"issuer.internal" not in result.body
    assert plain_upstream.connections == 0
    (failure,) = [e for e in rp.events if e.get("unmapped", {}).get("injection") == "failed"]
    assert failure["activity_id"] == 3 and "issuer.internal" in failure["status_detail"]
    assert rp.metric("grantbox_proxy_injections_total", outcome="token_endpoint_unreachable") == 1


async def test_malformed_token_is_refused_before_it_becomes_a_header(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", plain_upstream.port, allowed_ips=LOOPBACK)]
    )
    tokens = RecordingTokens(token="evil\r\nX-Injected: 1")
    async with running_proxy(make_config(providers=[("alpha", profile)]), tokens, tmp_path) as rp:
        result = await curl(f"http://alpha.localhost:{plain_upstream.port}/x", proxy=rp.url)
    assert result.status == 502 and result.json()["reason"] == "token_malformed"
    assert plain_upstream.connections == 0


async def test_upstream_unreachable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    config = make_config(policy=[endpoint("alpha.localhost", closed_port, allowed_ips=LOOPBACK)])
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        result = await curl(f"http://alpha.localhost:{closed_port}/", proxy=rp.url)
    assert result.status == 502 and result.json()["error"] == "upstream_unreachable"


class RebindingResolver:
    """Answers each name from a script: first answer, then the next, and so on."""

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = [ipaddress.ip_address(a) for a in answers]
        self.asked = 0

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return (answer,)


async def test_dns_rebinding_to_metadata_is_never_dialled(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(policy=[endpoint("rebind.example", port, allowed_ips=LOOPBACK)])
    resolver = RebindingResolver(["127.0.0.1", "169.254.169.254"])
    async with running_proxy(config, RecordingTokens(), tmp_path, resolver=resolver) as rp:
        first = await curl(f"http://rebind.example:{port}/first", proxy=rp.url)
        second = await curl(f"http://rebind.example:{port}/second", proxy=rp.url)
    assert first.status == 200
    assert second.status == 403 and second.json()["error"] == "ssrf_denied"
    assert [r.target for r in plain_upstream.requests] == ["/first"]


async def test_dns_rebinding_to_an_unlisted_live_address_is_never_dialled(tmp_path: Path) -> None:
    """The second answer points at a real listener; it must see no connection at all."""
    async with running_upstream() as good, running_upstream(host="127.0.0.2") as other:
        assert good.port != 0 and other.port != 0
        config = make_config(
            policy=[endpoint("rebind.example", good.port, allowed_ips=["127.0.0.1/32"])]
        )
        # The same port on 127.0.0.2 is what a rebinding attacker would point at.
        resolver = RebindingResolver(["127.0.0.1", "127.0.0.2"])
        other_port_config = make_config(
            policy=[endpoint("rebind.example", other.port, allowed_ips=["127.0.0.1/32"])]
        )
        async with running_proxy(config, RecordingTokens(), tmp_path, resolver=resolver) as rp:
            first = await curl(f"http://rebind.example:{good.port}/one", proxy=rp.url)
            rp.proxy.update(other_port_config)
            second = await curl(f"http://rebind.example:{other.port}/two", proxy=rp.url)
    assert first.status == 200 and good.requests[0].target == "/one"
    assert second.status == 403 and second.json()["error"] == "ssrf_denied"
    assert other.connections == 0


async def test_tls_skip_is_a_raw_tunnel_that_never_gets_a_token(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    port = tls_upstream.port
    config = make_config(
        policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK, tls="skip")]
    )
    tokens = RecordingTokens()
    async with running_proxy(config, tokens, tmp_path) as rp:
        # the client verifies the upstream's own certificate: the proxy did not intercept
        result = await curl(
            "-H",
            "Authorization: Bearer agent-own",
            f"https://alpha.localhost:{port}/raw",
            proxy=rp.url,
            cacert=upstream_ca_file,
        )
    assert result.status == 200, result.stderr
    (seen,) = tls_upstream.requests
    assert seen.header("authorization") == ["Bearer agent-own"]
    assert tokens.asked == []
    # the CONNECT is the tunnel's one request: one event, naming the address dialled
    (event,) = rp.events
    assert event["http_request"]["http_method"] == "CONNECT"
    assert event["dst_endpoint"]["ip"] == "127.0.0.1"
    assert "injection" not in event.get("unmapped", {})
    assert rp.metric("grantbox_proxy_bytes_total", direction="upstream") > 0


async def test_plain_http_inside_connect_is_relayed_per_request(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", plain_upstream.port, allowed_ips=LOOPBACK)]
    )
    async with running_proxy(
        make_config(providers=[("alpha", profile)]), RecordingTokens(token="t"), tmp_path
    ) as rp:
        result = await curl("-p", f"http://alpha.localhost:{plain_upstream.port}/p", proxy=rp.url)
    assert result.status == 200
    assert plain_upstream.requests[0].header("authorization") == ["Bearer t"]


async def test_unix_socket_and_handed_in_sockets(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    config = make_config(
        policy=[endpoint("alpha.localhost", plain_upstream.port, allowed_ips=LOOPBACK)]
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    proxy = EgressProxy(config, RecordingTokens(), events=lambda e: None)
    unix_path = tmp_path / "proxy.sock"
    await proxy.start(unix=unix_path, sockets=[listener])
    try:
        assert proxy.tcp_address == listener.getsockname()
        url = f"http://alpha.localhost:{plain_upstream.port}/u"
        reader, writer = await asyncio.open_unix_connection(str(unix_path))
        writer.write(f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        (over_unix,) = parse_replies(await read_all(reader))
        writer.close()
        async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{listener.getsockname()[1]}") as c:
            over_tcp = await c.get(url)
    finally:
        await proxy.stop()
    assert over_unix.status == 200 and over_tcp.status_code == 200
    assert len(plain_upstream.requests) == 2


async def test_https_absolute_form_must_use_connect(tmp_path: Path) -> None:
    config = make_config(policy=[endpoint("alpha.localhost", 443, allowed_ips=LOOPBACK)])
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port, b"GET https://alpha.localhost/ HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n"
        )
    (reply,) = parse_replies(raw)
    assert reply.status == 400


@pytest.mark.parametrize("target", ["/relative", "http://user@alpha.localhost/", "http:///x"])
async def test_forward_targets_must_be_absolute_http(target: str, tmp_path: Path) -> None:
    config = make_config(policy=[endpoint("alpha.localhost", 80, allowed_ips=LOOPBACK)])
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port, f"GET {target} HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n".encode()
        )
    (reply,) = parse_replies(raw)
    assert reply.status == 400 and json.loads(reply.body)["error"] == "invalid_request"


async def test_tls_handshake_with_untrusting_client_fails_cleanly(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    config = make_config(
        policy=[endpoint("alpha.localhost", tls_upstream.port, allowed_ips=LOOPBACK)]
    )
    async with running_proxy(
        config, RecordingTokens(), tmp_path, upstream_ca_file=upstream_ca_file
    ) as rp:
        result = await curl(
            f"https://alpha.localhost:{tls_upstream.port}/", proxy=rp.url, cacert=upstream_ca_file
        )
        assert result.code != 0  # the agent does not trust the proxy CA
        reader, writer = await asyncio.open_connection("127.0.0.1", rp.port)
        writer.write(b"GET http://alpha.localhost:1/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_all(reader)).startswith(b"HTTP/1.1 403")  # still serving
        writer.close()
    assert tls_upstream.connections == 0


async def test_upstream_certificates_are_verified(
    tls_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """Without the upstream's CA (system roots only) the intercepted request fails closed:
    the token (obtained before dialling, by design) is never sent, and the agent gets
    upstream_unreachable."""
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", tls_upstream.port, allowed_ips=LOOPBACK)]
    )
    tokens = RecordingTokens()
    async with running_proxy(make_config(providers=[("alpha", profile)]), tokens, tmp_path) as rp:
        result = await curl(
            f"https://alpha.localhost:{tls_upstream.port}/", proxy=rp.url, cacert=rp.ca_file
        )
    assert result.status == 502 and result.json()["error"] == "upstream_unreachable"
    assert tls_upstream.requests == [] and len(tokens.asked) == 1


async def test_metrics_count_final_outcomes(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(
        policy=[
            endpoint("alpha.localhost", port, allowed_ips=LOOPBACK),
            endpoint("meta.example", 80),
        ]
    )
    resolver = SystemResolver(parse_overrides(["meta.example=169.254.169.254"]))
    async with running_proxy(config, RecordingTokens(), tmp_path, resolver=resolver) as rp:
        assert (await curl(f"http://alpha.localhost:{port}/", proxy=rp.url)).status == 200
        assert (await curl("http://meta.example/", proxy=rp.url)).status == 403
        for _ in range(100):
            if rp.metric("grantbox_proxy_active_connections") == 0:
                break
            await asyncio.sleep(0.02)
        assert rp.metric("grantbox_proxy_active_connections") == 0
    assert rp.metric("grantbox_proxy_requests_total", decision="allowed", code="") == 1
    assert rp.metric("grantbox_proxy_requests_total", decision="denied", code="ssrf_denied") == 1
    assert rp.metric("grantbox_proxy_requests_total", decision="allowed", code="audit") == 0
    assert rp.metric("grantbox_proxy_bytes_total", direction="downstream") > 0


async def test_stop_closes_kept_alive_connections_promptly(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        reader, writer = await asyncio.open_connection("127.0.0.1", rp.port)
        writer.write(f"GET http://alpha.localhost:{port}/ HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await asyncio.wait_for(rp.proxy.stop(), 5)
        # read_all returns at EOF and raises TimeoutError if the proxy kept the connection
        await read_all(reader, timeout=5)
        writer.close()
    assert rp.metric("grantbox_proxy_active_connections") == 0
