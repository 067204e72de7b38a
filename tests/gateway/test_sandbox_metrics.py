"""Sandbox metrics snapshots: what the gateway accepts, and how it exposes them (pure)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from grantbox.gateway.sandbox_metrics import (
    FAMILIES,
    MAX_BYTES,
    MAX_SERIES,
    SandboxMetrics,
    Series,
    Snapshot,
    SnapshotRefused,
    parse,
    read_snapshot,
)
from grantbox.grants import GrantFailure
from grantbox.grants.metrics import GrantMetrics
from grantbox.proxy.answers import ErrorCode
from grantbox.proxy.metrics import ProxyMetrics
from grantbox.proxy.sink import EventQueue
from grantbox.supervisor.metrics import register_outbox_metrics, snapshot
from grantbox.supervisor.shipper import Shipper


async def _send(_items: Any) -> int:
    return 0


def supervisor_registry() -> CollectorRegistry:
    """A registry as a supervisor builds it, with every label value its code can use (and
    the event queue's family, which proxy workers add)."""
    registry = CollectorRegistry()
    proxy = ProxyMetrics(registry)
    grants = GrantMetrics(registry)
    EventQueue(lambda _data: None, 1, registry=registry).dropped.inc()
    register_outbox_metrics(registry, Shipper({"events": _send, "logs": _send}))
    proxy.requests.labels("allowed", "").inc(3)
    proxy.requests.labels("allowed", "audit").inc()
    for code in ErrorCode:
        proxy.requests.labels("denied", str(code)).inc()
    proxy.injections.labels("injected").inc()
    for reason in GrantFailure:
        proxy.injections.labels(str(reason)).inc()
        grants.grant_finished(str(reason), 0.2)
        grants.failures_served.labels(reason=str(reason)).inc()
    grants.grant_finished(None, 0.01)
    proxy.upstream_bytes.inc(10)
    return registry


def _json(samples: Any) -> tuple[Series, ...]:
    return parse(samples)


def test_a_supervisor_snapshot_is_accepted_whole() -> None:
    samples = snapshot(supervisor_registry())
    series = _json(samples)
    assert len(series) == len(samples) < MAX_SERIES
    assert len(orjson.dumps(samples)) < MAX_BYTES // 4
    # every family the supervisor defines is allow-listed with its type
    for family in supervisor_registry().collect():
        assert FAMILIES[family.name].type == family.type
    requests = [s for s in series if s.name == "grantbox_proxy_requests_total"]
    assert (("code", ""), ("decision", "allowed")) in {s.labels for s in requests}
    assert (
        next(s for s in requests if s.labels == (("code", ""), ("decision", "allowed"))).value == 3
    )


def test_the_snapshot_is_typed_samples_without_created() -> None:
    samples = snapshot(supervisor_registry())
    assert all(set(s) == {"name", "type", "labels", "value"} for s in samples)
    assert not [s for s in samples if s["name"].endswith("_created")]
    histogram = [s for s in samples if s["type"] == "histogram"]
    assert {s["name"] for s in histogram} == {
        "grantbox_token_grant_duration_seconds_bucket",
        "grantbox_token_grant_duration_seconds_sum",
        "grantbox_token_grant_duration_seconds_count",
    }


GOOD = {
    "name": "grantbox_proxy_requests_total",
    "type": "counter",
    "labels": {"decision": "denied", "code": "policy_denied"},
    "value": 2,
}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"type": "gauge"}, "is a counter"),
        ({"name": 3}, "name must be a string"),
        ({"labels": {3: "x"}}, "key not a string"),
        ({"labels": {"decision": "denied", "code": "a\nb"}}, "label code"),
        ({"labels": {"decision": "denied", "code": 'x"} 1\nfake 2'}}, "label code"),
        ({"labels": {"decision": "denied", "code": "a" * 65}}, "label code"),
        ({"labels": {"decision": "denied", "code": 3}}, "label code"),
        ({"value": "3"}, "must be a number"),
        ({"value": True}, "must be a number"),
        ({"value": math.inf}, "finite"),
        ({"value": math.nan}, "finite"),
        ({"value": -1}, "not be negative"),
        # refused even in a sample that would be skipped: bad values are never fine
        ({"name": "grantbox_new_total", "value": math.inf}, "finite"),
        ({"name": "grantbox_new_total", "labels": {"a": "x\ny"}}, "label a"),
    ],
)
def test_a_bad_sample_is_refused(change: dict[str, Any], why: str) -> None:
    with pytest.raises(SnapshotRefused, match=why):
        parse([{**GOOD, **change}])


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ({"name": "process_cpu_seconds_total"}, "process_cpu_seconds_total{code,decision}"),
        ({"name": "grantbox_proxy_requests_created"}, "grantbox_proxy_requests_created{"),
        ({"labels": {"decision": "denied"}}, "grantbox_proxy_requests_total{decision}"),
        # another sandbox's label, or a label a newer supervisor added: never exposed
        ({"labels": {**GOOD["labels"], "sandbox": "other"}}, "{code,decision,sandbox}"),
        ({"labels": {**GOOD["labels"], "host": "evil.example"}}, "{code,decision,host}"),
    ],
)
def test_a_sample_this_gateway_does_not_know_is_skipped_and_the_rest_kept(
    change: dict[str, Any], shown: str
) -> None:
    other = {**GOOD, "labels": {"decision": "allowed", "code": ""}}
    read = read_snapshot([{**GOOD, **change}, other])
    assert [dict(series.labels) for series in read.series] == [other["labels"]]
    [skipped] = read.skipped
    assert shown in skipped
    store = SandboxMetrics(lambda: ["id1"], 30.0)
    store.put("id1", "box", read)
    registry = CollectorRegistry()
    registry.register(store)
    text = generate_latest(registry).decode()
    assert "evil.example" not in text and 'sandbox="other"' not in text
    assert 'grantbox_proxy_requests_total{code="",decision="allowed",sandbox="box"} 2.0' in text


def test_a_skipped_sample_is_said_once_until_it_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SandboxMetrics(lambda: ["id1"], 30.0)
    newer = read_snapshot([GOOD, {**GOOD, "name": "grantbox_proxy_new_total"}])
    with caplog.at_level("WARNING", logger="grantbox.gateway"):
        store.put("id1", "box", newer)
        store.put("id1", "box", newer)
        store.put("id1", "box", read_snapshot([GOOD]))
        store.put("id1", "box", newer)
    said = [r.getMessage() for r in caplog.records if "does not know" in r.getMessage()]
    assert len(said) == 2 and all("grantbox_proxy_new_total" in m for m in said)
    assert all("box" in m for m in said)


def test_shape_count_size_and_duplicates_are_bounded() -> None:
    with pytest.raises(SnapshotRefused, match="exactly name"):
        parse([{k: v for k, v in GOOD.items() if k != "type"}])
    with pytest.raises(SnapshotRefused, match="exactly name"):
        parse([{**GOOD, "help": "mine"}])
    with pytest.raises(SnapshotRefused, match="list of samples"):
        parse({"samples": []})
    with pytest.raises(SnapshotRefused, match="bytes"):
        parse([{**GOOD, "labels": {"decision": "denied", "code": "x" * MAX_BYTES}}])
    with pytest.raises(SnapshotRefused, match="too deeply"):
        parse([orjson.loads("[" * 300 + "]" * 300)])
    many = [
        {**GOOD, "labels": {"decision": "denied", "code": f"c{i}"}} for i in range(MAX_SERIES + 1)
    ]
    with pytest.raises(SnapshotRefused, match="series"):
        parse(many)
    assert len(parse(many[:MAX_SERIES])) == MAX_SERIES
    with pytest.raises(SnapshotRefused, match="twice"):
        parse([GOOD, GOOD])


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "name": st.sampled_from(["grantbox_proxy_requests_total", "x", ""]),
                "type": st.sampled_from(["counter", "gauge", "histogram"]),
                "labels": st.dictionaries(st.text(max_size=8), st.text(max_size=80), max_size=3),
                "value": st.one_of(st.floats(), st.integers(), st.text(max_size=3)),
            }
        ),
        max_size=5,
    )
)
def test_whatever_parse_accepts_exposes_cleanly(samples: list[dict[str, Any]]) -> None:
    try:
        read = read_snapshot(samples)
    except SnapshotRefused:
        return
    series = read.series
    assert len(series) + len(read.skipped) >= min(1, len(samples))
    store = SandboxMetrics(lambda: ["id1"], 30.0)
    store.put("id1", "box", read)
    registry = CollectorRegistry()
    registry.register(store)
    text = generate_latest(registry).decode()
    assert len([line for line in text.splitlines() if not line.startswith("#")]) == len(series)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_series_carry_the_sandbox_label_and_go_when_stale_or_deleted() -> None:
    live = {"id-a", "id-b"}
    clock = Clock()
    store = SandboxMetrics(lambda: live, 30.0, clock)
    registry = CollectorRegistry()
    registry.register(store)
    series = Snapshot(_json(snapshot(supervisor_registry())))
    store.put("id-a", "box-a", series)
    clock.now += 20
    store.put("id-b", "box-b", series)
    text = generate_latest(registry).decode()
    for name in ("box-a", "box-b"):
        assert (
            f'grantbox_proxy_requests_total{{code="",decision="allowed",sandbox="{name}"}} 3.0'
            in text
        )
    assert "# TYPE grantbox_token_grant_duration_seconds histogram" in text
    assert text.count("# TYPE grantbox_proxy_requests_total counter") == 1
    clock.now += 11  # box-a's snapshot is now 31 s old
    text = generate_latest(registry).decode()
    assert 'sandbox="box-a"' not in text and 'sandbox="box-b"' in text
    live.discard("id-b")  # deleted (or being deleted)
    assert "grantbox_proxy" not in generate_latest(registry).decode()
    live.add("id-b")
    assert "grantbox_proxy" not in generate_latest(registry).decode(), "dropped for good"


def test_nothing_is_served_while_the_store_cannot_say_which_sandboxes_live() -> None:
    def broken() -> list[str]:
        raise OSError("database gone")

    live: list[str] = ["id-a"]
    answer = [broken, lambda: live]
    store = SandboxMetrics(lambda: answer[0](), 30.0)
    store.put("id-a", "box-a", Snapshot(_json(snapshot(supervisor_registry()))))
    registry = CollectorRegistry()
    registry.register(store)
    assert "grantbox_proxy" not in generate_latest(registry).decode()
    answer.reverse()  # the store is back: the snapshot was kept
    assert 'sandbox="box-a"' in generate_latest(registry).decode()
