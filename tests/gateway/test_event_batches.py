"""Events stored a batch to a row: packing, choosing a page and trimming, against a flat
list of events as the model of what a sandbox keeps."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.gateway.event_batches import (
    BatchIndex,
    LiveBatch,
    Trim,
    choose,
    pack,
    slots,
    trim,
    unpack,
)
from grantbox.gateway.shipped_events import StoredEvent

texts = st.one_of(
    st.builds(
        lambda d: json.dumps(d, ensure_ascii=False),
        st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=8))),
    ),
    st.just('{ "a" : [1, 2, {"b": null}] }'),
)
events = st.builds(
    StoredEvent,
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    kind=st.text(max_size=64),
    data=texts,
)


@given(st.lists(events, min_size=1, max_size=30))
def test_a_packed_batch_gives_back_each_event_as_sent(batch: list[StoredEvent]) -> None:
    packed = pack(batch)
    assert unpack(packed.data) == [event.data for event in batch]
    assert orjson.loads(packed.times) == [event.ts for event in batch]
    assert orjson.loads(packed.kinds) == [event.kind for event in batch]
    assert (packed.ts_min, packed.ts_max, packed.size) == (
        min(e.ts for e in batch),
        max(e.ts for e in batch),
        len(batch),
    )


def test_an_empty_batch_is_not_a_row() -> None:
    with pytest.raises(ValueError, match="at least one"):
        pack([])


def _stored(shape: list[tuple[int, int]]) -> list[BatchIndex]:
    """Batches of the given (count, skip), numbered from 1, event n at time n."""
    batches, first = [], 1
    for index, (count, skip) in enumerate(shape):
        times = [float(first + i) for i in range(count)]
        kinds = [f"k{first + i}" for i in range(count)]
        batches.append(
            BatchIndex(index, first, count, skip, orjson.dumps(times).decode(), json.dumps(kinds))
        )
        first += count
    return batches


def _flat(batches: list[BatchIndex]) -> list[int]:
    return [b.first_seq + i for b in batches for i in range(b.skip, b.size)]


shapes = st.lists(
    st.integers(1, 7).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))),
    max_size=8,
)


@given(
    shapes,
    st.integers(0, 60),
    st.one_of(st.none(), st.integers(0, 60)),
    st.one_of(st.none(), st.integers(0, 60)),
    st.integers(1, 60),
)
def test_a_page_is_what_the_flat_list_would_give(
    shape: list[tuple[int, int]], after: int, since: int | None, tail: int | None, limit: int
) -> None:
    batches = _stored(shape)
    matches = [n for n in _flat(batches) if n > after and (since is None or n >= since)]
    chosen, omitted = choose(batches, after=after, since=since, tail=tail, limit=limit)
    if tail is None:
        expected, expected_omitted = matches[:limit], 0
    else:
        expected = matches[len(matches) - tail :] if tail else []
        expected_omitted = len(matches) - len(expected)
    assert [slot.seq for slot in chosen] == expected
    assert omitted == expected_omitted
    for slot in chosen:  # each slot points at its event's place, time and kind
        batch = batches[slot.batch_id]
        assert slot.seq == batch.first_seq + slot.position
        assert (slot.ts, slot.kind) == (float(slot.seq), f"k{slot.seq}")


def test_hidden_events_are_never_shown() -> None:
    [batch] = _stored([(5, 3)])
    assert [slot.seq for slot in slots(batch, after=0, since=None)] == [4, 5]
    assert [slot.seq for slot in slots(batch, after=4, since=None)] == [5]
    assert slots(batch, after=5, since=None) == []


@given(shapes.filter(bool), st.integers(0, 60))
def test_trimming_keeps_exactly_the_newest_events(shape: list[tuple[int, int]], keep: int) -> None:
    batches = _stored(shape)
    live = _flat(batches)
    newest = batches[-1].first_seq
    plan = trim(
        (LiveBatch(b.first_seq, b.size, b.skip) for b in batches),
        len(live) - keep,
        newest,
    )
    after = []
    for b in batches:
        if plan.delete_below is not None and b.first_seq < plan.delete_below:
            assert b.first_seq != newest  # the newest batch carries the numbering on
            continue
        skip = plan.skip if b.first_seq == plan.hide_in else b.skip
        assert b.skip <= skip <= b.size
        after += [b.first_seq + i for i in range(skip, b.size)]
    assert after == live[max(0, len(live) - keep) :]


def test_nothing_to_trim_changes_nothing() -> None:
    batches = [LiveBatch(1, 3, 0), LiveBatch(4, 3, 1)]
    assert trim(batches, 0, 4) == Trim(None, None, 0)
    assert trim(batches, -5, 4) == Trim(None, None, 0)


def test_keeping_none_hides_the_newest_batch_instead_of_deleting_it() -> None:
    assert trim([LiveBatch(1, 3, 0), LiveBatch(4, 2, 0)], 5, 4) == Trim(2, 4, 2)
