"""``sandbox logs`` and ``sandbox events``: newest-first limits that say so, --since,
streamed --follow, JSON lines, one line per decision, and nothing an agent wrote acting on
the operator's terminal (#16, #12)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from grantbox.drivers import SandboxSpec
from grantbox.gateway import GatewayServer
from grantbox.proxy.events import RequestFacts, http_activity
from grantbox.supervisor.gateway_client import SupervisorClient
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import gateway_settings, serving
from tests.support.grantbox_command import GRANTBOX, Grantbox

HOSTILE = "title\x1b]0;pwned\x07 clip\x1b]52;c;ZXZpbA==\x07 erase\x1b[2K\rforged line"
MARKUP = "a[conceal]SECRETX[/conceal]b[link=https://evil.example]clickme[/link]"


@pytest.fixture
def box(gb: Grantbox, driver: RecordingDriver) -> SandboxSpec:
    gb.ok("sandbox", "create", "box")
    return driver.created[-1]


def ship(
    spec: SandboxSpec,
    lines: Sequence[Mapping[str, Any]] = (),
    events: Sequence[Mapping[str, Any]] = (),
) -> None:
    async def send() -> None:
        async with SupervisorClient(spec.gateway_url, spec.sandbox_id, spec.supervisor_token) as c:
            if lines:
                await c.ship_logs(lines)
            if events:
                await c.ship_events(events)

    asyncio.run(send())


def _requests(server: GatewayServer, route: str) -> float:
    total = 0.0
    for metric in server.gateway.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("route") == route:
                total += sample.value
    return total


def test_a_tail_shows_the_newest_and_says_on_stderr_what_it_left_out(
    gb: Grantbox, box: SandboxSpec
) -> None:
    ship(box, [{"stream": "stdout", "message": f"line {i}"} for i in range(1000)])
    ship(box, [{"stream": "stdout", "message": f"line {i}"} for i in range(1000, 1500)])
    default = gb.ok("sandbox", "logs", "box")
    shown = [line.split("] ", 1)[1] for line in default.stdout.splitlines()]
    assert shown == [f"line {i}" for i in range(500, 1500)]
    assert default.stderr.startswith("note: 500 older lines left out; showing the newest 1000")
    last = gb.ok("sandbox", "logs", "box", "--tail", "3", "-o", "json")
    assert [json.loads(line)["message"] for line in last.stdout.splitlines()] == [
        "line 1497",
        "line 1498",
        "line 1499",
    ]
    assert "1497 older lines left out" in last.stderr
    everything = gb.ok("sandbox", "logs", "box", "--tail", "-1")
    assert len(everything.stdout.splitlines()) == 1500 and everything.stderr == ""


def test_since_takes_a_duration_or_an_rfc3339_time(gb: Grantbox, box: SandboxSpec) -> None:
    now = time.time()
    ship(box, [{"message": "old", "ts": now - 3600}, {"message": "new", "ts": now}])
    for since in ("30m", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))):
        out = gb.ok("sandbox", "logs", "box", "--since", since, "-o", "json").stdout
        assert [json.loads(line)["message"] for line in out.splitlines()] == ["new"]
    record = json.loads(gb.ok("sandbox", "logs", "box", "-o", "json").stdout.splitlines()[0])
    assert time.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    error = gb.refused("sandbox", "logs", "box", "--since", "yesterday", code=2)
    assert "neither a duration (like 30s, 5m, 1h30m, 2d) nor an RFC 3339 time" in error


def test_follow_streams_new_lines_over_one_request(tmp_path: Path) -> None:
    # Its own gateway, whose streams are held a whole minute: no reconnection in between.
    driver = RecordingDriver()
    with serving(gateway_settings(tmp_path, longpoll_max=60.0), driver) as server:
        env = {"GRANTBOX_GATEWAY": server.url, "GRANTBOX_TOKEN": server.operator_token}
        Grantbox(env=env).ok("sandbox", "create", "box")
        box = driver.created[-1]
        route = "/api/v1/sandboxes/{name}/logs"
        before = _requests(server, route)
        follower = subprocess.Popen(
            [GRANTBOX, "sandbox", "logs", "box", "-f", "-o", "json"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert follower.stdout is not None
            for batch in range(3):
                ship(box, [{"message": f"batch {batch} line {i}"} for i in range(2)])
                got = [json.loads(follower.stdout.readline())["message"] for _ in range(2)]
                assert got == [f"batch {batch} line 0", f"batch {batch} line 1"]
            # Three batches arrived while the one request stayed open: streamed, not polled.
            assert _requests(server, route) == before
        finally:
            follower.terminate()
            follower.wait(10)
        deadline = time.monotonic() + 10
        while _requests(server, route) != before + 1:
            assert time.monotonic() < deadline, _requests(server, route)
            time.sleep(0.05)


def test_follow_ends_when_the_sandbox_is_deleted(gb: Grantbox, box: SandboxSpec) -> None:
    follower = subprocess.Popen(
        [GRANTBOX, "sandbox", "events", "box", "-f"],
        env={**os.environ, **gb.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ship(box, events=[http_activity(FACTS, allowed=False, code="policy_denied")])
    assert follower.stdout is not None
    assert "deny" in follower.stdout.readline()
    gb.ok("sandbox", "delete", "box")
    assert follower.wait(30) == 0


FACTS = RequestFacts("GET", "http", "evil.example", 80, "/exfil", sandbox_id="s")


def test_events_are_one_line_per_decision_and_json_lines(gb: Grantbox, box: SandboxSpec) -> None:
    opened = {"class_uid": 4001, "activity_id": 1, "message": "agent connected"}  # older
    denied = http_activity(FACTS, allowed=False, code="policy_denied", detail="no endpoint")
    allowed = http_activity(
        RequestFacts("GET", "http", "alpha.localhost", 18081, "/hello"),
        allowed=True,
        entry="demo/alpha",
    )
    ship(box, events=[opened, denied, allowed])
    lines = gb.ok("sandbox", "events", "box").stdout.splitlines()
    assert len(lines) == 2  # the connection opening is not a decision
    assert (
        "  deny      GET http://evil.example/exfil  reason=policy_denied: no endpoint" in lines[0]
    )
    assert lines[1].endswith("allow     GET http://alpha.localhost:18081/hello  rule=demo/alpha")
    records = [
        json.loads(line)
        for line in gb.ok("sandbox", "events", "box", "-o", "json").stdout.splitlines()
    ]
    assert [r["data"]["class_uid"] for r in records] == [4001, 4002, 4002]
    assert all(r["time"].endswith("Z") for r in records)


def test_what_an_agent_wrote_is_shown_escaped_unless_raw(gb: Grantbox, box: SandboxSpec) -> None:
    ship(box, [{"stream": "stdout", "message": HOSTILE}])
    facts = RequestFacts("GET", "http", "evil.example", 80, "/" + MARKUP + "\x1b]0;t\x07")
    ship(box, events=[http_activity(facts, allowed=False, code="policy_denied")])
    shown = gb.ok("sandbox", "logs", "box").stdout
    assert "\x1b" not in shown and "\r" not in shown and "\x07" not in shown
    assert (
        "title\\x1b]0;pwned\\x07 clip\\x1b]52;c;ZXZpbA==\\x07 erase\\x1b[2K\\rforged line" in shown
    )
    raw = gb.ok("sandbox", "logs", "box", "--raw").stdout
    assert raw == HOSTILE + "\n"
    event = gb.ok("sandbox", "events", "box").stdout
    assert MARKUP in event and "\x1b" not in event and "\\x1b]0;t\\x07" in event
    as_json = gb.ok("sandbox", "logs", "box", "-o", "json").stdout
    assert "\x1b" not in as_json and json.loads(as_json)["message"] == HOSTILE
