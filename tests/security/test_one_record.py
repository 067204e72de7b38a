"""The operator's record: exactly one OCSF event and one request-metric update per request,
on every path, from the request's single outcome (DESIGN §3.6).

Before the sans-IO flow a forward request to an address refused after resolution was
recorded twice (an "allowed" event, then a "denied" one) and tunnels added connection
events; here every path is driven with real clients and the record is counted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from grantbox.grants import TokenEndpointUnreachable
from grantbox.proxy import IPAddress
from tests.support.proxy_clients import curl, parse_replies, read_all, send_raw, tunnel
from tests.support.proxy_harness import (
    RecordingTokens,
    RunningProxy,
    endpoint,
    grant_profile,
    make_config,
    running_proxy,
)
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK


class MetadataFor:
    """Answers ``rebind.example`` with the metadata address, anything else with loopback."""

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        if host == "rebind.example":
            return (ipaddress.ip_address("169.254.169.254"),)
        return (ipaddress.ip_address("127.0.0.1"),)


def _requests_counted(rp: RunningProxy) -> float:
    total = 0.0
    for metric in rp.registry.collect():
        if metric.name == "grantbox_proxy_requests":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def _outcomes(rp: RunningProxy) -> list[tuple[str, Any]]:
    return [(e["http_request"]["http_method"], e.get("status_code")) for e in rp.events]


def _config(plain: RecordingUpstream, tls: RecordingUpstream) -> Any:
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", tls.port, allowed_ips=LOOPBACK, path="/api/**")]
    )
    return make_config(
        policy=[
            endpoint("plain.localhost", plain.port, allowed_ips=LOOPBACK),
            endpoint("alpha.localhost", tls.port, allowed_ips=LOOPBACK),
            endpoint("beta.localhost", tls.port, allowed_ips=LOOPBACK, tls="skip"),
            endpoint("rebind.example", plain.port, allowed_ips=["0.0.0.0/0"]),
        ],
        providers=[("alpha", profile)],
    )


async def test_one_event_and_one_count_per_request_on_every_path(
    plain_upstream: RecordingUpstream,
    tls_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
) -> None:
    config = _config(plain_upstream, tls_upstream)
    tls_port, plain_port = tls_upstream.port, plain_upstream.port
    async with running_proxy(
        config,
        RecordingTokens(),
        tmp_path,
        resolver=MetadataFor(),
        upstream_ca_file=upstream_ca_file,
    ) as rp:
        seen: list[list[tuple[str, Any]]] = []

        def step() -> list[tuple[str, Any]]:
            new = _outcomes(rp)[sum(len(s) for s in seen) :]
            seen.append(new)
            assert _requests_counted(rp) == len(rp.events)
            return new

        # forward, allowed
        assert (await curl(f"http://plain.localhost:{plain_port}/a", proxy=rp.url)).status == 200
        assert step() == [("GET", None)]
        # forward, refused after resolution (the old double record)
        ssrf = await curl(f"http://rebind.example:{plain_port}/", proxy=rp.url)
        assert ssrf.status == 403 and ssrf.json()["error"] == "ssrf_denied"
        assert step() == [("GET", "ssrf_denied")]
        # TLS inside CONNECT: the CONNECT, then each request of the kept-alive tunnel
        two = await curl(
            f"https://alpha.localhost:{tls_port}/api/1",
            f"https://alpha.localhost:{tls_port}/api/2",
            proxy=rp.url,
            cacert=rp.ca_file,
        )
        assert two.status == 200, two.stderr
        assert step() == [("CONNECT", None), ("GET", None), ("GET", None)]
        # plain HTTP inside CONNECT
        async with tunnel(rp.port, "plain.localhost", plain_port, None) as (reader, writer):
            writer.write(
                f"GET /p HTTP/1.1\r\nHost: plain.localhost:{plain_port}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            assert parse_replies(await read_all(reader))[0].status == 200
        assert step() == [("CONNECT", None), ("GET", None)]
        # tls: skip: the CONNECT is the only request the proxy sees
        raw = await curl(
            f"https://beta.localhost:{tls_port}/x", proxy=rp.url, cacert=upstream_ca_file
        )
        assert raw.status == 200, raw.stderr
        assert step() == [("CONNECT", None)]
        # refused before the head parsed
        bad = await send_raw(rp.port, b"GET http://plain.localhost/ HTTP/1.1\r\nA\x00: b\r\n\r\n")
        assert parse_replies(bad)[0].status == 400
        assert step() == [("GET", "invalid_request")]
        # CONNECT refused
        denied = await send_raw(rp.port, b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n")
        assert parse_replies(denied, [b"CONNECT"])[0].status == 403
        assert step() == [("CONNECT", "policy_denied")]
    assert all(e["class_uid"] == 4002 for e in rp.events)


@pytest.mark.parametrize("inside_tls", [False, True])
async def test_a_failed_grant_is_one_event_naming_binding_and_reason(
    inside_tls: bool,
    plain_upstream: RecordingUpstream,
    tls_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
) -> None:
    upstream = tls_upstream if inside_tls else plain_upstream
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", upstream.port, allowed_ips=LOOPBACK)]
    )
    tokens = RecordingTokens(fail=TokenEndpointUnreachable("issuer down"))
    async with running_proxy(
        make_config(providers=[("alpha", profile)]),
        tokens,
        tmp_path,
        upstream_ca_file=upstream_ca_file,
    ) as rp:
        scheme = "https" if inside_tls else "http"
        result = await curl(
            f"{scheme}://alpha.localhost:{upstream.port}/x", proxy=rp.url, cacert=rp.ca_file
        )
    assert result.status == 502 and result.json()["reason"] == "token_endpoint_unreachable"
    requests = [e for e in rp.events if e["http_request"]["http_method"] == "GET"]
    (event,) = requests
    assert event["unmapped"]["injection"] == "failed"
    assert event["unmapped"]["reason"] == "token_endpoint_unreachable"
    assert event["unmapped"]["binding"].startswith("alpha:token@")
    assert _requests_counted(rp) == len(rp.events) == (2 if inside_tls else 1)
    assert upstream.connections == 0
