"""Sandbox conditions (pure merge, then over the real API) and the log records' truncation
flag, from the supervisor's call to what ``sandbox get`` and ``sandbox logs`` show."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.drivers import SandboxSpec
from grantbox.gateway.conditions import Condition, dumps, loads, merge
from grantbox.gateway.services.sandboxes import MAX_LOG_MESSAGE
from grantbox.supervisor import SupervisorClient
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import GatewayCli, gateway_settings, serving

_types = st.sampled_from(["ShippingBacklog", "Other", "Third"])
_statuses = st.sampled_from(["True", "False", "Unknown"])
_reports = st.dictionaries(_types, _statuses).map(
    lambda d: [{"type": t, "status": s, "reason": "R", "message": "m"} for t, s in d.items()]
)


@given(_reports, _reports)
def test_since_moves_only_when_a_status_changes(first: list[Any], second: list[Any]) -> None:
    before = merge((), first, now=100.0)
    assert all(c.since == 100.0 for c in before)
    after = merge(before, second, now=200.0)
    assert [c.type for c in after] == sorted(item["type"] for item in second)
    was = {c.type: c.status for c in before}
    for condition in after:
        unchanged = was.get(condition.type) == condition.status
        assert condition.since == (100.0 if unchanged else 200.0)
    assert loads(dumps(after)) == after


def test_stored_conditions_that_cannot_be_read_are_none() -> None:
    for text in (None, "", "{", "{}", '[1, "x", {"status": "True"}]'):
        assert loads(text) == ()
    kept = Condition("ShippingBacklog", "True", "Backlogged", "6000 waiting", 1.5)
    assert loads(dumps([kept])) == (kept,)
    assert kept.to_dict()["since"] == "1970-01-01T00:00:01.500Z"


@pytest.fixture
def driver() -> RecordingDriver:
    return RecordingDriver()


@pytest.fixture
def gw(tmp_path: Path, driver: RecordingDriver) -> Iterator[GatewayCli]:
    with serving(gateway_settings(tmp_path), driver) as server:
        yield GatewayCli(server.url, server.operator_token, tmp_path)


def _client(spec: SandboxSpec) -> SupervisorClient:
    return SupervisorClient(spec.gateway_url, spec.sandbox_id, spec.supervisor_token)


BACKLOG = {
    "type": "ShippingBacklog",
    "status": "True",
    "reason": "Backlogged",
    "message": "0 events and 6000 log lines waiting for the gateway",
}
CAUGHT_UP = {**BACKLOG, "status": "False", "reason": "UpToDate", "message": "keeping up"}


def test_a_backlog_is_a_condition_and_the_sandbox_stays_ready(
    gw: GatewayCli, driver: RecordingDriver
) -> None:
    gw.ok("sandbox", "create", "--name", "box")
    spec = driver.created[0]

    async def beat(*conditions: dict[str, str]) -> None:
        async with _client(spec) as client:
            await client.heartbeat("", conditions=conditions)

    asyncio.run(beat(BACKLOG))
    view = gw.json("sandbox", "get", "box")
    assert view["phase"] == "ready", view
    [condition] = view["conditions"]
    since = condition.pop("since")
    assert condition == BACKLOG
    assert dt.datetime.fromisoformat(since).tzinfo is not None  # RFC 3339, UTC
    table = gw.ok("sandbox", "get", "box").stdout
    assert "ShippingBacklog: 0 events and 6000 log lines waiting" in table
    assert "ShippingBacklog" in gw.ok("sandbox", "list").stdout
    yaml_view = gw.ok("sandbox", "get", "box", "-o", "yaml").stdout
    assert "type: ShippingBacklog" in yaml_view and "status: 'True'" in yaml_view

    asyncio.run(beat({**BACKLOG, "message": "0 events and 7000 log lines waiting"}))
    again = gw.json("sandbox", "get", "box")["conditions"][0]
    assert again["since"] == since, "the status did not change: neither does since"
    assert again["message"].startswith("0 events and 7000")

    asyncio.run(beat(CAUGHT_UP))
    view = gw.json("sandbox", "get", "box")
    [condition] = view["conditions"]
    assert (condition["status"], condition["reason"]) == ("False", "UpToDate")
    assert condition["since"] >= since
    assert view["phase"] == "ready"
    assert "ShippingBacklog" not in gw.ok("sandbox", "get", "box").stdout  # only what holds

    asyncio.run(beat())  # a supervisor that reports none has none
    assert gw.json("sandbox", "get", "box")["conditions"] == []


@pytest.mark.parametrize(
    "conditions",
    [
        [{"type": "shipping", "status": "True"}],
        [{"type": "ShippingBacklog\n", "status": "True"}],
        [{"type": "ShippingBacklog", "status": "yes"}],
        [{"type": "ShippingBacklog", "status": "True", "reason": "not camel"}],
        [{"type": "ShippingBacklog", "status": "True", "message": "x" * 1001}],
        [{"type": "Twice", "status": "True"}, {"type": "Twice", "status": "False"}],
        [{"type": f"C{i}", "status": "True"} for i in range(9)],
    ],
)  # fmt: skip
def test_malformed_conditions_are_refused_and_change_nothing(
    gw: GatewayCli, driver: RecordingDriver, conditions: list[dict[str, str]]
) -> None:
    gw.ok("sandbox", "create", "--name", "box")
    spec = driver.created[0]
    url = f"{spec.gateway_url}/api/v1/supervisor/sandboxes/{spec.sandbox_id}/heartbeat"
    headers = {"Authorization": f"Bearer {spec.supervisor_token}"}
    good = httpx.post(url, headers=headers, json={"conditions": [BACKLOG]})
    assert good.status_code == 200, good.text
    answer = httpx.post(url, headers=headers, json={"conditions": conditions})
    assert answer.status_code == 422, answer.text
    [kept] = gw.json("sandbox", "get", "box")["conditions"]
    assert kept["message"] == BACKLOG["message"]


def test_truncation_is_a_flag_of_the_record(gw: GatewayCli, driver: RecordingDriver) -> None:
    gw.ok("sandbox", "create", "--name", "box")
    spec = driver.created[0]
    long = "y" * (MAX_LOG_MESSAGE + 10)

    async def ship() -> None:
        async with _client(spec) as client:
            await client.ship_logs(
                [
                    {"stream": "stdout", "message": "whole", "ts": 1.0},
                    {"stream": "stdout", "message": "cut by the supervisor", "truncated": True},
                    {"stream": "stdout", "message": long},  # cut by the gateway
                    {"stream": "stdout", "message": "ends like a cut [truncated]"},
                ]
            )

    asyncio.run(ship())
    out = gw.ok("sandbox", "logs", "box", "-o", "json").stdout.splitlines()
    records = [json.loads(line) for line in out]
    assert [r["truncated"] for r in records] == [False, True, True, False]
    assert len(records[2]["message"]) == MAX_LOG_MESSAGE
    text = gw.ok("sandbox", "logs", "box").stdout.splitlines()
    assert text[0].endswith("] whole")
    assert text[1].endswith("] cut by the supervisor [truncated]")
    assert text[2].endswith("y [truncated]")
    # The agent can print the marker's words; only the flag says a line was cut.
    assert text[3].endswith("] ends like a cut [truncated]")
    assert records[3]["truncated"] is False


def test_an_oversized_event_is_stored_as_a_truncated_record_and_events_stay_readable(
    gw: GatewayCli, driver: RecordingDriver
) -> None:
    """An agent controls a URL up to the proxy's 64 KiB head: an event that large must never
    be stored as cut JSON that breaks every later read of the sandbox's events."""
    gw.ok("sandbox", "create", "--name", "box")
    spec = driver.created[0]
    url = "http://denied.invalid/" + "A" * 30_000

    async def ship() -> None:
        async with _client(spec) as client:
            await client.ship_events(
                [
                    {"kind": "http", "n": 1},
                    {"kind": "http", "http_request": {"url": {"url_string": url}}},
                    {"kind": "http", "n": 3},
                ]
            )

    asyncio.run(ship())
    out = gw.ok("sandbox", "events", "box", "-o", "json").stdout  # JSON lines
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [e["data"].get("n") for e in events] == [1, None, 3]
    big = events[1]["data"]
    assert big["truncated"] is True and big["kind"] == "http"
    assert big["size"] > MAX_LOG_MESSAGE
    assert "AAAA" not in json.dumps(big)


def test_a_shipped_batch_is_stored_whole_and_a_malformed_body_changes_nothing(
    gw: GatewayCli, driver: RecordingDriver
) -> None:
    """Events are stored in one executemany and their bodies parsed by orjson: every event
    of a batch comes back as sent, in order; a body that is not JSON (or not strict JSON)
    is refused with 422 and stores nothing."""
    gw.ok("sandbox", "create", "--name", "box")
    spec = driver.created[0]
    sent = [
        {"kind": "http", "n": n, "time": 1_700_000_000_000 + n, "text": "é\u2028 ☃"}
        for n in range(300)
    ]

    async def ship() -> None:
        async with _client(spec) as client:
            assert await client.ship_events(sent) == len(sent)

    asyncio.run(ship())
    url = f"{spec.gateway_url}/api/v1/supervisor/sandboxes/{spec.sandbox_id}/events"
    headers = {
        "Authorization": f"Bearer {spec.supervisor_token}",
        "Content-Type": "application/json",
    }
    for body in (b'{"events": [', b'{"events": [{"n": NaN}]}', b"\xff"):
        answer = httpx.post(url, content=body, headers=headers)
        assert answer.status_code == 422, (body, answer.text)
    out = gw.ok("sandbox", "events", "box", "-o", "json").stdout
    stored = [json.loads(line)["data"] for line in out.splitlines() if line.strip()]
    assert stored == sent
