"""A shipped batch read into rows (pure): each event kept as the text it arrived as, with the
kind and time a mapping would give, and nothing of a batch taken when any of it is wrong."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.gateway.shipped_events import (
    DAY,
    MAX_DATA,
    MAX_EVENTS,
    BatchRefused,
    read_shipped,
    stored_event,
)
from grantbox.proxy import event_json

NOW = 1_764_969_600.0

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
_times = st.one_of(
    st.integers(int((NOW - 2 * DAY) * 1000), int((NOW + 2 * DAY) * 1000)),
    st.floats(NOW * 1000 - 1e6, NOW * 1000 + 1e6),
    _json,
)
_events = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.one_of(st.text(max_size=100), _json),
        "time": _times,
        "ts": st.one_of(st.floats(NOW - 2 * DAY, NOW + 2 * DAY), _json),
        "other": _json,
    },
)


def _batch(events: list[Any], encode: Any = event_json) -> bytes:
    return b'{"events":[' + b",".join(encode(event) for event in events) + b"]}"


@given(st.lists(_events, max_size=6))
def test_each_event_keeps_its_text_and_gets_the_kind_and_time_a_mapping_would(
    events: list[dict[str, Any]],
) -> None:
    for encode in (event_json, orjson.dumps, lambda e: json.dumps(e, indent=1).encode()):
        stored = read_shipped(_batch(events, encode), NOW)
        assert len(stored) == len(events)
        for event, row in zip(events, stored, strict=True):
            expected = stored_event(event, NOW)
            assert (row.ts, row.kind) == (expected.ts, expected.kind)
            assert json.loads(row.data) == json.loads(expected.data) == event
            assert row.data == encode(event).decode()  # as sent, not encoded again


def test_the_proxys_events_are_stored_byte_for_byte() -> None:
    event = {"kind": "http", "time": int(NOW * 1000) + 5, "url": "https://api.example/é"}
    [row] = read_shipped(_batch([event]), NOW)
    assert row == (NOW + 0.005, "http", event_json(event).decode())


@pytest.mark.parametrize("field", ["time", "ts"])
def test_a_time_past_any_float_is_taken_as_arrival_not_an_error(field: str) -> None:
    body = b'{"events": [{"kind": "http", "%s": 1%s}]}' % (field.encode(), b"0" * 400)
    [row] = read_shipped(body, NOW)
    assert row.ts == NOW and json.loads(row.data)[field] == 10**400


def test_a_larger_event_is_stored_as_a_record_saying_so() -> None:
    event = {"kind": "http", "pad": "x" * MAX_DATA}
    [row] = read_shipped(_batch([event]), NOW)
    assert json.loads(row.data) == {
        "kind": "http",
        "truncated": True,
        "size": len(event_json(event)),
    }


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"", "body"),
        (b"\xff", "body"),
        (b'{"events": [', "body"),
        (b'{"events": [{"n": NaN}]}', "body"),
        (b'{"events": [{"n": 1}], "more": 1}', "body"),
        (b'{"events": {"n": 1}}', "body"),
        (b"[]", "body"),
        (b'{"events": [{"n": 1}, [1]]}', "events.1"),
        (b'{"events": [{"n": 1}, "x"]}', "events.1"),
        (b'{"events": [{"n": "\xff"}]}', "events.0"),
        (b'{"events": [' + b",".join([b"{}"] * (MAX_EVENTS + 1)) + b"]}", "body"),
    ],
)
def test_a_batch_with_anything_wrong_is_refused_whole(body: bytes, where: str) -> None:
    with pytest.raises(BatchRefused) as refused:
        read_shipped(body, NOW)
    assert refused.value.where == where


def test_a_full_batch_is_taken() -> None:
    body = b'{"events": [' + b",".join([b'{"kind":"http"}'] * MAX_EVENTS) + b"]}"
    assert len(read_shipped(body, NOW)) == MAX_EVENTS
