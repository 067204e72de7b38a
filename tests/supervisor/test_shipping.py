"""The bounds on what the supervisor ships (pure), and the control-byte flood end to end."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.proxy import event_json
from grantbox.supervisor.shipping import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    batches,
    bounded_event,
    bounded_message,
    encoded_events,
    encoded_size,
    flatten,
    halves,
)
from tests.support.sandbox_stack import Stack, running_stack

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20_000)


@given(_text)
def test_a_message_is_the_longest_prefix_that_fits_and_says_when_it_was_cut(text: str) -> None:
    message, truncated = bounded_message(text, 2048)
    assert encoded_size(message) <= 2048
    assert text.startswith(message)
    assert truncated == (message != text)
    if truncated:  # one more character would not have fitted
        assert encoded_size(text[: len(message) + 1]) > 2048


def test_sixty_thousand_control_bytes_are_cut_to_the_bound() -> None:
    message, truncated = bounded_message("\x01" * 60_000)
    assert truncated and encoded_size(message) <= MAX_MESSAGE_BYTES
    assert set(message) == {"\x01"}  # the cut is data (the flag), never text in the line


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


def _strings_are_prefixes(original: Any, cut: Any) -> bool:
    if isinstance(original, str):
        return isinstance(cut, str) and original.startswith(cut)
    if isinstance(original, dict):
        return all(_strings_are_prefixes(original[k], cut[k]) for k in original)
    if isinstance(original, list):
        return len(original) == len(cut) and all(map(_strings_are_prefixes, original, cut))
    return bool(original == cut)


@given(st.dictionaries(st.text(max_size=5), _json, max_size=5))
def test_an_event_fits_its_bound_and_says_when_it_was_cut(event: dict[str, Any]) -> None:
    bounded = bounded_event(event, 2048)
    assert encoded_size(bounded) <= 2048
    if encoded_size(event) <= 2048:
        assert bounded == event
        return
    assert bounded["unmapped"]["truncated"] is True
    if set(bounded) != {"kind", "unmapped"} or bounded.get("kind") != event.get("kind"):
        rest = {k: v for k, v in event.items() if k != "unmapped"}
        assert _strings_are_prefixes(rest, {k: bounded[k] for k in rest})


def test_an_agents_thirty_kilobyte_url_is_cut_and_flagged() -> None:
    url = "http://denied.invalid/" + "A" * 30_000
    event = {"kind": "http", "http_request": {"url": {"url_string": url}}, "unmapped": {"x": 1}}
    bounded = bounded_event(event)
    assert encoded_size(bounded) <= MAX_EVENT_BYTES
    assert url.startswith(bounded["http_request"]["url"]["url_string"])
    assert len(bounded["http_request"]["url"]["url_string"]) >= 1024
    assert bounded["unmapped"] == {"x": 1, "truncated": True}


@given(st.lists(st.dictionaries(st.text(max_size=3), _text, max_size=3), max_size=60))
def test_batches_keep_order_and_bounds(items: list[dict[str, str]]) -> None:
    grouped = batches(items, max_bytes=8192, max_items=7)
    assert flatten(grouped) == items
    for group in grouped:
        assert 1 <= len(group) <= 7
        assert len(group) == 1 or sum(encoded_size(i) + 1 for i in group) <= 8192
    first, second = halves(items)
    assert first + second == items


@given(st.lists(st.dictionaries(st.text(max_size=5), _json, max_size=5), max_size=8))
def test_encoded_events_travel_as_their_bytes_unless_they_must_be_cut(
    events: list[dict[str, Any]],
) -> None:
    lines = b"".join(event_json(event) + b"\n" for event in events)
    shippable, malformed = encoded_events(lines, 2048)
    assert malformed == 0
    assert len(shippable) == len(events)
    for event, item in zip(events, shippable, strict=True):
        if encoded_size(event) <= 2048:
            assert item == event_json(event)  # untouched: no parse, no second encoding
        else:
            assert item == bounded_event(event, 2048)  # exactly what a mapping would get
        assert encoded_size(item) <= 2048


def test_an_agents_long_url_in_an_encoded_event_is_cut_like_any_other() -> None:
    url = "http://denied.invalid/" + "\x01" * 30_000
    line = event_json({"kind": "http", "http_request": {"url": {"url_string": url}}})
    (item,), malformed = encoded_events(line + b"\n")
    assert malformed == 0 and isinstance(item, dict)
    assert item["unmapped"] == {"truncated": True}
    assert encoded_size(item) <= MAX_EVENT_BYTES


def test_lines_that_are_not_json_objects_are_counted_not_shipped() -> None:
    good = event_json({"kind": "http"})
    lines = b"\n".join([good, b"[1, 2]", b"{not json", b"", b"\xff{}", good]) + b"\n"
    shippable, malformed = encoded_events(lines)
    assert shippable == [good, good]
    assert malformed == 3


def test_batches_measure_encoded_events_by_their_length() -> None:
    line = event_json({"kind": "http", "pad": "x" * 100})
    grouped = batches([line] * 10 + [{"kind": "log"}], max_bytes=(len(line) + 1) * 4)
    assert [len(group) for group in grouped] == [4, 4, 3]


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.2)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
async def test_a_control_byte_flood_cannot_keep_events_from_the_operator(stack: Stack) -> None:
    stack.gw.ok("profile", "import", "-f", stack.gw.write("alpha.yaml", stack.profile()))
    stack.gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    flood = "i=0; while [ $i -lt 12 ]; do head -c 60000 /dev/zero | tr '\\000' '\\001'; echo; i=$((i+1)); done"  # noqa: E501
    requests = (
        "i=0; while [ $i -lt 15 ]; do"
        f" curl -s -o /dev/null {stack.alpha_url}/granted-$i;"
        " curl -s -o /dev/null http://denied.invalid/refused-$i; i=$((i+1)); done;"
        " curl -s -o /dev/null"
        " http://denied.invalid/long-$(head -c 30000 /dev/zero | tr '\\000' A);"
        " echo flood-done; sleep 600"
    )
    await asyncio.to_thread(
        stack.gw.json, "sandbox", "create", "--name", "loud", "--provider", "pa",
        "--", "sh", "-c", f"{flood}; {requests}",
    )  # fmt: skip

    def events() -> list[dict[str, Any]]:
        out = stack.gw.run("sandbox", "events", "loud", "-o", "json").stdout.strip()
        if out.startswith("["):
            parsed: list[dict[str, Any]] = json.loads(out)
            return parsed
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def mentions(marker: str) -> int:
        return sum(marker in str(event) for event in events())

    await until(
        lambda: mentions("/granted-") >= 15 and mentions("denied.invalid") >= 15,
        60,
        "every OCSF event of the 30 requests in `sandbox events`",
    )
    # An agent's 30 KB URL: its event arrives cut and flagged, and the events stay readable.
    await until(lambda: mentions("/long-AAAA") >= 1, 30, "the long URL's event")
    [long] = [e for e in events() if "/long-AAAA" in str(e)]
    assert long["data"]["unmapped"]["truncated"] is True
    assert len(json.dumps(long["data"])) <= 2 * MAX_EVENT_BYTES
    tokens = [r for r in stack.upstream.requests if r.target.startswith("/granted-")]
    assert len(tokens) == 15 and all(r.header("authorization") for r in tokens)
    await until(lambda: "flood-done" in stack.gw.run("sandbox", "logs", "loud").stdout, 30, "logs")
    logs = stack.gw.run("sandbox", "logs", "loud", "-o", "json").stdout
    records = [json.loads(line) for line in logs.splitlines() if line.strip()]
    cut = [r for r in records if r["truncated"]]
    assert len(cut) == 12 and all(set(r["message"]) == {"\x01"} for r in cut)
    assert [r for r in records if not r["truncated"]], "short lines are not flagged"
    assert max(len(line) for line in logs.splitlines()) < 4 * MAX_MESSAGE_BYTES
    text = stack.gw.run("sandbox", "logs", "loud").stdout.splitlines()
    assert sum(line.endswith(" [truncated]") for line in text) == 12
    assert stack.server.gateway.settings.max_body_bytes // 4 >= MAX_BATCH_BYTES
