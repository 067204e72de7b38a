"""SSRF through the proxy: every spelling of a metadata, link-local, unspecified or
unlisted loopback address is refused before anything is dialled, and cleartext tokens
only ever go to an address that really is loopback.

The proxy runs with its real resolver (system DNS; numeric forms like ``2852039166`` are
resolved by glibc exactly as curl would) or with ``--resolve``-style overrides, which is
how a name that answers with a hostile address is simulated.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from grantbox.proxy import SystemResolver, address_problem, validate_addresses
from tests.support.proxy_clients import parse_replies, send_raw
from tests.support.proxy_harness import (
    RecordingTokens,
    endpoint,
    grant_profile,
    make_config,
    running_proxy,
)
from tests.support.proxy_upstream import running_upstream

# A policy that admits any host on port 80: only address validation stands in the way.
ANY_HOST = [endpoint("*", 80), endpoint("*.*", 80), endpoint("*.*.*.*", 80)]


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "2852039166",  # decimal
        "0251.0376.0251.0376",  # octal
        "0xa9.0xfe.0xa9.0xfe",  # hex
        "0xa9fea9fe",
        "[::ffff:169.254.169.254]",  # IPv4-mapped IPv6
        "[::ffff:a9fe:a9fe]",
        "[fe80::1%25lo]",  # link-local with a zone
        "[fd00:ec2::254]",  # EC2's IPv6 metadata
        "100.100.100.200",  # Alibaba metadata
        "0.0.0.0",
        "0",
        "[::]",
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f000001",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "localhost",
        "localhost.",
        "sub.localhost",
        "169.254.169.254.",
        "224.0.0.1",
        "255.255.255.255",
    ],
)
async def test_hostile_address_spellings_are_ssrf_denied(host: str, tmp_path: Path) -> None:
    tokens = RecordingTokens()
    async with running_proxy(make_config(policy=ANY_HOST), tokens, tmp_path) as rp:
        raw = await send_raw(rp.port, f"GET http://{host}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        (reply,) = parse_replies(raw)
        assert (reply.status, reply.json()["error"]) == (403, "ssrf_denied"), reply.body
        assert rp.metric("grantbox_proxy_requests_total", decision="denied", code="ssrf_denied")


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix embedding 169.254.169.254
        "64:ff9b::7f00:1",  # ... and 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4
        "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254
        "::a9fe:a9fe",  # IPv4-compatible (deprecated)
        "::7f00:1",
    ],
)
async def test_names_answering_with_embedded_ipv4_metadata_or_loopback_are_refused(
    address: str, tmp_path: Path
) -> None:
    """Where NAT64/6to4 gateways exist these addresses reach the embedded IPv4 one."""
    resolver = SystemResolver({"rebind.example": (ipaddress.ip_address(address),)})
    config = make_config(policy=[endpoint("rebind.example", 80)])
    async with running_proxy(config, RecordingTokens(), tmp_path, resolver=resolver) as rp:
        raw = await send_raw(
            rp.port, b"GET http://rebind.example/ HTTP/1.1\r\nHost: rebind.example\r\n\r\n"
        )
    (reply,) = parse_replies(raw)
    assert (reply.status, reply.json()["error"]) == (403, "ssrf_denied")


def test_embedded_ipv4_is_judged_like_the_address_itself() -> None:
    nat64_public = ipaddress.ip_address("64:ff9b::808:808")
    assert address_problem(nat64_public, ()) is None  # 8.8.8.8 through NAT64 is fine
    for text in ("64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::", "::a9fe:a9fe"):
        assert validate_addresses((ipaddress.ip_address(text),), ())[1] is not None


async def test_connect_to_hostile_spellings_is_refused_too(tmp_path: Path) -> None:
    config = make_config(policy=[endpoint(p, 443) for p in ("*", "*.*", "*.*.*.*")])
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        for host in ("2852039166", "[::ffff:169.254.169.254]", "0.0.0.0", "127.1"):
            raw = await send_raw(rp.port, f"CONNECT {host}:443 HTTP/1.1\r\n\r\n".encode())
            (reply,) = parse_replies(raw, [b"CONNECT"])
            assert (reply.status, reply.json()["error"]) == (403, "ssrf_denied"), host


async def test_a_localhost_name_that_resolves_elsewhere_gets_no_cleartext_token(
    tmp_path: Path,
) -> None:
    """``alpha.localhost`` looks loopback by name; if the resolver (an operator override
    here) sends it to a network address, the token must not travel there in cleartext."""
    resolver = SystemResolver({"alpha.localhost": (ipaddress.ip_address("192.0.2.10"),)})
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", 80, allowed_ips=["192.0.2.0/24"])]
    )
    tokens = RecordingTokens(token="granted")
    async with running_proxy(
        make_config(providers=[("alpha", profile)]), tokens, tmp_path, resolver=resolver
    ) as rp:
        raw = await send_raw(
            rp.port, b"GET http://alpha.localhost/ HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n"
        )
    (reply,) = parse_replies(raw)
    assert (reply.status, reply.json()["error"]) == (403, "cleartext_credential_refused")
    assert tokens.asked == []


@pytest.mark.parametrize(
    ("host", "address", "refused"),
    [
        ("alpha.localhost", "127.0.0.1", False),
        ("alpha.localhost", "::1", False),
        ("alpha.localhost", "::ffff:127.0.0.1", False),
        ("alpha.localhost", "192.0.2.10", True),
        ("127.0.0.1", "127.0.0.1", False),
        ("alpha.ns.svc", "10.96.0.10", False),  # in-cluster: trusted by name
        ("alpha.example", "192.0.2.10", False),  # not a cleartext host at all: decided earlier
    ],
)
def test_cleartext_address_problem(host: str, address: str, refused: bool) -> None:
    from grantbox.proxy.decision import cleartext_address_problem

    problem = cleartext_address_problem(host, (ipaddress.ip_address(address),))
    assert (problem is not None) is refused


async def test_an_ipv6_literal_endpoint_works_and_gets_its_token_only_there(
    tmp_path: Path,
) -> None:
    """The positive case, so the refusals above are not a broken IPv6 path: ``[::1]`` listed
    in ``allowed_ips`` is dialled, its binding injected, and the upstream told ``[::1]:P``;
    the same port on 127.0.0.1 (another host to the policy) gets nothing."""
    async with running_upstream(host="::1") as upstream:
        port = upstream.port
        profile = grant_profile("v6", [endpoint("::1", port, allowed_ips=["::1/128"])])
        tokens = RecordingTokens(token="granted")
        async with running_proxy(make_config(providers=[("v6", profile)]), tokens, tmp_path) as rp:
            ok = await send_raw(
                rp.port,
                f"GET http://[::1]:{port}/ HTTP/1.1\r\nHost: x\r\n"
                "Connection: close\r\n\r\n".encode(),
            )
            other = await send_raw(
                rp.port, f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
    assert [r.status for r in parse_replies(ok)] == [200]
    assert [r.status for r in parse_replies(other)] == [403]
    (seen,) = upstream.requests
    assert seen.header("host") == [f"[::1]:{port}"]
    assert seen.header("authorization") == ["Bearer granted"]


async def test_allowing_any_address_does_not_open_the_hosts_loopback(tmp_path: Path) -> None:
    """``allowed_ips: [0.0.0.0/0, ::/0]`` reads as "anywhere"; the proxy still refuses the
    host's own loopback services (gateway, identity agent, other sandboxes' proxies)."""
    config = make_config(
        policy=[endpoint(p, 80, allowed_ips=["0.0.0.0/0", "::/0"]) for p in ("*", "*.*.*.*")]
    )
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        for host in ("127.0.0.1", "[::1]", "localhost", "2130706433"):
            raw = await send_raw(
                rp.port, f"GET http://{host}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            (reply,) = parse_replies(raw)
            assert (reply.status, reply.json()["error"]) == (403, "ssrf_denied"), host
