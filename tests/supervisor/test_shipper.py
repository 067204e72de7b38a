"""The shipper over plain data: what it sends, keeps, drops and counts, the condition it
reports, and the metrics read from it. ``send`` functions stand in for the gateway's
answers (each raises the client error the real client raises for that answer)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from grantbox.proxy import event_json
from grantbox.supervisor import SupervisorClientError
from grantbox.supervisor.launch import SupervisorOptions
from grantbox.supervisor.metrics import PREFIX, register_outbox_metrics
from grantbox.supervisor.runtime import Supervisor
from grantbox.supervisor.shipper import Shipper

Item = Mapping[str, Any]


class Gateway:
    """Takes batches; answers as told: ``down`` (503), ``poison`` items refused (413
    for any batch holding one), ``gone`` (404 sandbox_gone)."""

    def __init__(self) -> None:
        self.received: dict[str, list[Item]] = {"events": [], "logs": []}
        self.calls: list[tuple[str, int]] = []
        self.down = False
        self.gone = False

    def sender(self, kind: str) -> Any:
        async def send(sent: list[Item | bytes]) -> int:
            # encoded events arrive as bytes; the real client sends them as they are
            batch = [orjson.loads(item) if isinstance(item, bytes) else item for item in sent]
            self.calls.append((kind, len(batch)))
            if self.gone:
                raise SupervisorClientError("gone", 404, "sandbox_gone")
            if self.down:
                raise SupervisorClientError("gateway unreachable", 0)
            if any(item.get("poison") for item in batch):
                raise SupervisorClientError("too large", 413, "payload_too_large")
            self.received[kind].extend(batch)
            return len(batch)

        return send

    def shipper(self, **kwargs: Any) -> Shipper:
        return Shipper({kind: self.sender(kind) for kind in ("events", "logs")}, **kwargs)


def scrape(shipper: Shipper) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    register_outbox_metrics(registry, shipper)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_events_ship_before_logs_and_everything_arrives_in_order() -> None:
    gateway = Gateway()
    shipper = gateway.shipper()
    for i in range(3):
        shipper.log(f"line {i}", "stdout")
        shipper.event({"n": i})
    await shipper.ship_once()
    assert [kind for kind, _ in gateway.calls] == ["events", "logs"]
    assert [e["n"] for e in gateway.received["events"]] == [0, 1, 2]
    assert [line["message"] for line in gateway.received["logs"]] == ["line 0", "line 1", "line 2"]
    assert all(line["truncated"] is False for line in gateway.received["logs"])
    assert shipper.queued("events") == shipper.queued("logs") == 0


async def test_a_refused_item_is_dropped_alone_counted_and_said_while_the_rest_arrives() -> None:
    gateway = Gateway()
    shipper = gateway.shipper()
    for i in range(8):
        shipper.event({"n": i, "poison": i == 5})
    await shipper.ship_once()
    assert [e["n"] for e in gateway.received["events"]] == [0, 1, 2, 3, 4, 6, 7]
    assert shipper.refused_items["events"] == 1
    assert shipper.refused_batches["events"] == 4  # 8 → 4 → 2 → 1 halves held it
    assert shipper.queued("logs") == 1  # the record says so in the next round
    await shipper.ship_once()
    [note] = gateway.received["logs"]
    assert note["stream"] == "supervisor"
    assert note["message"] == "grantbox: 1 events refused by the gateway (total 1)"
    await shipper.ship_once()  # said once, not on every round
    assert len(gateway.received["logs"]) == 1 and shipper.queued("logs") == 0
    metrics = scrape(shipper)
    assert metrics[("grantbox_supervisor_outbox_refused_batches_total", (("kind", "events"),))] == 4
    dropped = (f"{PREFIX}_dropped_total", (("kind", "events"), ("reason", "refused")))
    assert metrics[dropped] == 1


async def test_a_workers_encoded_events_keep_their_order_and_a_refused_one_goes_alone() -> None:
    gateway = Gateway()
    shipper = gateway.shipper()
    shipper.event({"n": 0})
    lines = b"".join(event_json({"n": i, "poison": i == 3}) + b"\n" for i in range(1, 6))
    shipper.encoded_events(lines + b"not an event\n")
    shipper.event({"n": 6})
    assert shipper.refused_items["events"] == 1  # the line that was no event
    await shipper.ship_once()
    assert [e["n"] for e in gateway.received["events"]] == [0, 1, 2, 4, 5, 6]
    assert shipper.refused_items["events"] == 2  # and the one the gateway refused


async def test_a_gateway_that_is_away_keeps_the_items_for_later() -> None:
    gateway = Gateway()
    shipper = gateway.shipper()
    shipper.event({"n": 1})
    shipper.log("kept", "stdout")
    gateway.down = True
    await shipper.ship_once()
    assert shipper.queued("events") == shipper.queued("logs") == 1
    assert shipper.refused_batches == {"events": 0, "logs": 0}
    gateway.down = False
    await shipper.ship_once()
    assert gateway.received["events"] == [{"n": 1}]
    assert [line["message"] for line in gateway.received["logs"]] == ["kept"]


async def test_gone_is_not_swallowed() -> None:
    gateway = Gateway()
    shipper = gateway.shipper()
    shipper.event({"n": 1})
    gateway.gone = True
    with pytest.raises(SupervisorClientError) as raised:
        await shipper.ship_once()
    assert raised.value.sandbox_gone


async def test_backlog_condition_metrics_and_drops_while_the_gateway_is_away() -> None:
    gateway = Gateway()
    shipper = gateway.shipper(capacity=10, take=4)
    condition = shipper.condition()
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "ShippingBacklog",
        "False",
        "UpToDate",
    )
    gateway.down = True
    for i in range(4):
        shipper.log(f"line {i}", "stdout")
    assert shipper.condition()["status"] == "False"  # below half full
    shipper.log("line 4", "stdout")
    condition = shipper.condition()
    assert condition["status"] == "True" and condition["reason"] == "Backlogged"
    assert condition["message"] == "0 events and 5 log lines waiting for the gateway"
    for i in range(5, 13):
        shipper.log(f"line {i}", "stdout")
    metrics = scrape(shipper)
    assert metrics[("grantbox_supervisor_outbox_queued", (("kind", "logs"),))] == 10
    assert metrics[("grantbox_supervisor_outbox_capacity", (("kind", "logs"),))] == 10
    full = (f"{PREFIX}_dropped_total", (("kind", "logs"), ("reason", "outbox_full")))
    assert metrics[full] == 3
    await shipper.ship_once()  # nothing gets through; the oldest three are gone
    gateway.down = False
    for _ in range(4):
        await shipper.ship_once()
    messages = [line["message"] for line in gateway.received["logs"]]
    # The first note joined a full outbox and pushed out one more line: said in turn.
    assert messages == [
        *(f"line {i}" for i in range(4, 13)),
        "grantbox: 3 log lines dropped (outbox full) (total 3)",
        "grantbox: 1 log lines dropped (outbox full) (total 4)",
    ]
    condition = shipper.condition()
    assert condition["status"] == "False"
    assert "lost so far: 4 log lines dropped (outbox full)" in condition["message"]
    assert scrape(shipper)[("grantbox_supervisor_outbox_queued", (("kind", "logs"),))] == 0


async def test_truncated_lines_carry_the_flag() -> None:
    gateway = Gateway()
    shipper = gateway.shipper()
    shipper.log("cut", "stderr", truncated=True)
    await shipper.ship_once()
    [line] = gateway.received["logs"]
    assert (line["message"], line["stream"], line["truncated"]) == ("cut", "stderr", True)


async def test_the_supervisors_metrics_endpoint_serves_the_outbox(tmp_path: Path) -> None:
    """Scraped for real over HTTP from ``supervisor run --metrics-listen``'s server."""
    token = tmp_path / "state" / "supervisor-token"
    token.parent.mkdir()
    token.write_text("not-a-real-token\n")
    options = SupervisorOptions(
        gateway_url="http://127.0.0.1:9",
        sandbox_id="s1",
        token_file=token,
        identity_socket=f"unix://{tmp_path}/sockets/agent.sock",
        metrics_listen=("127.0.0.1", 0),
    )
    supervisor = Supervisor(options)
    try:
        for i in range(3):
            supervisor.shipper.log(f"line {i}", "stdout")
        supervisor.shipper.event({"n": 1})
        address = supervisor.serve_metrics()
        assert address is not None
        async with httpx.AsyncClient(trust_env=False) as client:
            scraped = (await client.get(f"http://127.0.0.1:{address[1]}/metrics")).text
    finally:
        await supervisor._shutdown()
    families = {f.name: f for f in text_string_to_metric_families(scraped)}
    queued = {s.labels["kind"]: s.value for s in families[f"{PREFIX}_queued"].samples}
    assert queued == {"events": 1.0, "logs": 3.0}
    assert f"{PREFIX}_dropped" in families and f"{PREFIX}_refused_batches" in families
    assert "grantbox_token_cache_entries" in scraped  # one registry with the engine's
    assert "not-a-real-token" not in scraped


async def test_a_round_says_when_more_is_waiting_so_a_busy_proxy_is_shipped_at_once() -> None:
    """A proxy serving thousands of requests a second makes events faster than one take
    per shipping interval: the round says more is waiting (and the supervisor ships again
    without pausing) as long as the gateway takes what it is sent, and not when it is away."""
    gateway = Gateway()
    shipper = gateway.shipper(take=3)
    for i in range(7):
        shipper.event({"n": i})
    assert await shipper.ship_once() is True
    assert await shipper.ship_once() is True
    assert await shipper.ship_once() is False  # the last one went: pause until the next
    assert [e["n"] for e in gateway.received["events"]] == list(range(7))

    for i in range(7, 14):
        shipper.event({"n": i})
    gateway.down = True
    assert await shipper.ship_once() is False  # away: wait the interval, keep everything
    assert shipper.queued("events") == 7
    gateway.down = False
    shipper.log("a line", "stdout")
    assert await shipper.ship_once() is True
    assert shipper.queued("events") == 4 and shipper.queued("logs") == 0
    # Less than a full take waiting is no backlog: the next round waits the interval.
    gateway.received["events"].clear()
    for i in range(14, 16):
        shipper.event({"n": i})
    assert await shipper.ship_once() is True  # 3 of the 6 waiting
    assert await shipper.ship_once() is False  # the last 3: a full take, nothing behind
    shipper.event({"n": 16})
    assert await shipper.ship_once() is False
    assert [e["n"] for e in gateway.received["events"]] == list(range(10, 17))
