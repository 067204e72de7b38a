"""The event sink: JSON lines exactly as ``json`` would write them, bounded, never blocking."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from grantbox.proxy import EventQueue, event_json, json_line

_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # past 64 bits orjson refuses: json writes them
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=0xA0)),  # controls, DEL, C1 controls
)
_EVENTS = st.one_of(
    st.text(),
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            _SCALARS,
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
            max_leaves=12,
        ),
        max_size=6,
    ),
)


@given(_EVENTS)
@example({"header": "a\x7fb"})
@example({"header": "a\x85c\u2028d\x1b[2Je\x00"})
@example({"n": [1, -1, 2**63, 2**70, None, True, ""], "s": "/\\\"'"})
def test_an_event_is_written_byte_for_byte_as_json_writes_it(event: Any) -> None:
    line = event_json(event)
    assert line == _JSON(event).encode("ascii")
    assert all(0x20 <= b < 0x7F for b in line)  # printable ASCII only, whatever the agent sent
    assert json.loads(line) == event
    assert json_line(event) == line.decode() + "\n"


def _queue(written: list[bytes], capacity: int) -> tuple[EventQueue, CollectorRegistry]:
    registry = CollectorRegistry()
    return EventQueue(written.append, capacity, registry=registry), registry


async def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    written: list[bytes] = []
    queue, registry = _queue(written, capacity=3)
    for n in range(5):
        queue.defer({"n": n})
    queue.defer(lambda: {"n": 5})
    assert len(queue) == 3
    assert registry.get_sample_value("grantbox_proxy_events_dropped_total") == 3
    await queue.aclose()  # writes what is left
    assert b"".join(written) == b'{"n":0}\n{"n":1}\n{"n":2}\n'


async def test_events_are_built_and_written_in_batches_by_the_background_task() -> None:
    written: list[bytes] = []
    queue, registry = _queue(written, capacity=100)
    queue.start()
    built: list[int] = []

    def builder(n: int) -> Any:
        def build() -> dict[str, int]:
            built.append(n)
            return {"n": n}

        return build

    for n in range(10):
        queue.defer(builder(n))
    assert built == []  # nothing is built while the requests are served
    for _ in range(200):
        if len(b"".join(written).splitlines()) == 10:
            break
        await asyncio.sleep(0.01)
    await queue.aclose()
    lines = b"".join(written).splitlines()
    assert [json.loads(line)["n"] for line in lines] == list(range(10))
    assert len(written) < 10  # batched: fewer writes than events
    assert registry.get_sample_value("grantbox_proxy_events_dropped_total") == 0


async def test_a_failing_writer_counts_its_batch_as_dropped_and_the_queue_goes_on() -> None:
    calls: list[bytes] = []

    def write(data: bytes) -> None:
        calls.append(data)
        if len(calls) == 1:
            raise OSError("disk full")

    registry = CollectorRegistry()
    queue = EventQueue(write, 10, registry=registry)
    queue.defer({"n": 1})
    queue.defer({"n": 2})
    await queue.aclose()
    assert registry.get_sample_value("grantbox_proxy_events_dropped_total") == 2
    queue.defer({"n": 3})
    await queue.aclose()
    assert calls[-1] == b'{"n":3}\n'
