"""A hostile agent against stored credentials, through a real proxy on loopback.

The agent holds a placeholder and tries to get the value sent where it is not bound -
pipelined behind a bound request, percent-encoded, split across chunks of a body, in a
Basic credential, with a lying Host - and to read the value back from anything the proxy
shows (answers, events, logs at DEBUG, metrics). None of it works; a stored value with a
line break is refused at use as well as at write.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from grantbox.profiles import EffectiveConfig, StaticSecrets
from tests.support.proxy_clients import parse_replies, send_raw
from tests.support.proxy_harness import RecordingTokens, endpoint, make_config, running_proxy
from tests.support.proxy_upstream import RecordingUpstream
from tests.support.stored_credentials import stored_profile, with_values

from .conftest import LOOPBACK

VALUE = "sk_live_Stored0Value"


def _config(port: int, value: str = VALUE) -> tuple[EffectiveConfig, str]:
    profile = stored_profile(
        "svc", [endpoint("alpha.localhost", port, path="/v1/**", allowed_ips=LOOPBACK)]
    )
    policy = [
        endpoint(h, port, allowed_ips=LOOPBACK) for h in ("alpha.localhost", "beta.localhost")
    ]
    config, placeholders = with_values(
        make_config(policy=policy, providers=[("svc", profile)]), {"svc:key": value}
    )
    return config, placeholders["svc:key"]


def _get(host: str, port: int, target: str, extra: str = "") -> bytes:
    return (
        f"GET http://{host}:{port}{target} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    )


async def test_a_placeholder_never_carries_the_value_to_an_unbound_upstream(
    plain_upstream: RecordingUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = plain_upstream.port
    config, p = _config(port)
    encoded = p.replace("_", "%5F")
    basic = base64.b64encode(f"u:{p}".encode()).decode()
    chunked_body = b"".join(
        b"%x\r\n%s\r\n" % (len(part), part) for part in (p[:10].encode(), p[10:].encode())
    )
    attempts = [
        # pipelined behind a bound request on one kept-alive connection
        _get("alpha.localhost", port, f"/v1/ok?t={p}") + _get("beta.localhost", port, f"/x?t={p}"),
        # percent-encoded, to a bound host but an unbound path and to an unbound host
        _get("alpha.localhost", port, f"/v2/x?t={encoded}"),
        _get("beta.localhost", port, f"/x?t={encoded}"),
        # a Basic credential, and a Host header naming the bound host
        _get("beta.localhost", port, "/x", f"Authorization: Basic {basic}\r\n"),
        _get("beta.localhost", port, f"/x?t={p}").replace(b"Host: beta", b"Host: alpha"),
        # split across the chunks of a body that did not opt in
        f"POST http://alpha.localhost:{port}/v1/up HTTP/1.1\r\nHost: alpha.localhost:{port}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode() + chunked_body + b"0\r\n\r\n",
    ]  # fmt: skip
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        answers = [await send_raw(rp.port, attempt) for attempt in attempts]
        metrics = generate_latest(rp.registry).decode()
        events = json.dumps(rp.events)
    # The bound request got the value; nothing else reached the upstream.
    assert [r.target for r in plain_upstream.requests] == [f"/v1/ok?t={VALUE}"]
    replies = parse_replies(answers[0], [b"GET", b"GET"])
    assert [r.status for r in replies] == [200, 403]
    for raw in answers[1:]:
        (reply,) = parse_replies(raw, [b"GET"])
        assert reply.status in (400, 403), raw
        if reply.status == 403:
            assert reply.json()["error"] == "credential_endpoint_mismatch"
    # (The bound upstream echoes what it got - its own doing; every proxy answer is searched.)
    proxy_answers = replies[1].body + b"".join(answers[1:])
    everything = proxy_answers.decode("latin-1") + events + metrics + caplog.text
    everything += "".join(repr(r.__dict__) for r in caplog.records)
    assert VALUE not in everything


async def test_a_value_with_a_line_break_is_refused_at_use_and_never_split(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config, p = _config(port)
    smuggling = "x\r\nX-Injected: yes"
    config = config.with_secrets(StaticSecrets({"svc:key": smuggling}, {"svc:key": p}))
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(rp.port, _get("alpha.localhost", port, "/v1/x", f"X-Key: {p}\r\n"))
    (reply,) = parse_replies(raw, [b"GET"])
    assert reply.status == 502
    assert reply.json() == {
        "error": "token_grant_failed",
        "reason": "grant_misconfigured",
        "message": reply.json()["message"],
        "target": f"alpha.localhost:{port}",
    }
    assert plain_upstream.connections == 0
    assert "X-Injected" not in json.dumps(rp.events)
