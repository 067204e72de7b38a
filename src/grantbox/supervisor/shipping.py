"""What the supervisor ships to the operator's record, bounded so the agent cannot blind it.

An agent controls its output: a line of control bytes grows sixfold once JSON-escaped, and a
batch of such lines could exceed the gateway's body limit and be refused forever. So each
log message is cut to a fixed encoded size (the record says so in its ``truncated`` flag,
never in the text, which an agent could imitate), batches are cut by encoded size well
below the gateway's limit, and a batch the gateway still refuses is split, then dropped
item by item with a count (see :mod:`.shipper`). Pure functions.

Events from proxy workers arrive already encoded (JSON lines, one per event): one that fits
its bound travels as those bytes, so a busy sandbox's supervisor does not parse and encode
again every request's event; only an oversized one is parsed and cut.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from grantbox.proxy import event_json

T = TypeVar("T")

MAX_MESSAGE_BYTES = 8 * 1024
"""A log message's JSON-encoded size at most (the gateway accepts far more)."""
MAX_BATCH_BYTES = 1024 * 1024
"""A shipped batch's JSON-encoded size at most: a quarter of the gateway's 4 MiB limit, and
large enough that a busy proxy's events (about 1 KiB each) fill ``MAX_BATCH_ITEMS``: the
gateway pays a request, a commit and a retention trim per batch."""
MAX_BATCH_ITEMS = 1000
MAX_EVENT_BYTES = 8 * 1024
"""An event's JSON-encoded size at most; its strings (a URL is the agent's, up to the proxy's
64 KiB head) are cut to fit."""
MIN_STRING = 64


Shippable = Mapping[str, Any] | bytes
"""An event or log line, or an event already encoded as one JSON object (no newline)."""


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as compact ASCII JSON (``json``'s, computed at orjson's speed:
    every proxied request's event is measured); already encoded bytes are their length."""
    if isinstance(value, bytes):
        return len(value)
    return len(event_json(value))


def bounded_message(text: str, limit: int = MAX_MESSAGE_BYTES) -> tuple[str, bool]:
    """``(message, truncated)``: the longest prefix of ``text`` whose JSON encoding fits
    ``limit``, and whether anything was cut."""
    if encoded_size(text) <= limit:
        return text, False
    low, high = 0, len(text)
    while low < high:  # the longest prefix whose encoding fits
        middle = (low + high + 1) // 2
        if encoded_size(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low], True


def _cut_strings(value: Any, length: int) -> Any:
    if isinstance(value, str):
        return value[:length]
    if isinstance(value, Mapping):
        return {key: _cut_strings(item, length) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_cut_strings(item, length) for item in value]
    return value


def bounded_event(event: Mapping[str, Any], limit: int = MAX_EVENT_BYTES) -> dict[str, Any]:
    """``event`` whole when its encoding fits ``limit``; else with every string value cut to
    the longest length (halving) that makes it fit, and ``unmapped.truncated: true`` (OCSF's
    place for extras). Failing even that, only its ``kind``, marked truncated."""
    if encoded_size(event) <= limit:
        return dict(event)
    length = limit
    while length > MIN_STRING:
        length //= 2
        cut = _cut_strings(event, length)
        extra = cut.get("unmapped")
        cut["unmapped"] = {**(extra if isinstance(extra, dict) else {}), "truncated": True}
        if encoded_size(cut) <= limit:
            return dict(cut)
    return {"kind": str(event.get("kind") or "event")[:64], "unmapped": {"truncated": True}}


def encoded_events(lines: bytes, limit: int = MAX_EVENT_BYTES) -> tuple[list[Shippable], int]:
    """``(events, malformed)``: JSON lines encoded by :func:`event_json` (a proxy
    worker's batch) as shippable events, each whole as its bytes when it fits ``limit``
    (the size :func:`bounded_event` measures), else parsed and bounded; and how many lines
    were not a JSON object (not shipped: one would break its whole batch). Lines are only
    checked for an object's shape, not parsed: one shaped so but broken inside (no
    encoder of ours writes one) has its batch refused by the gateway, and the shipper
    splits that batch down to the line and drops it, counted."""
    events: list[Shippable] = []
    malformed = 0
    for line in lines.split(b"\n"):
        if not line:
            continue
        if len(line) <= limit and line[:1] == b"{" and line[-1:] == b"}" and line.isascii():
            events.append(line)
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None
        if isinstance(event, dict):
            events.append(bounded_event(event, limit))
        else:
            malformed += 1
    return events, malformed


def batches(
    items: Sequence[Shippable],
    max_bytes: int = MAX_BATCH_BYTES,
    max_items: int = MAX_BATCH_ITEMS,
) -> list[list[Shippable]]:
    """Consecutive runs of ``items`` within both bounds (an oversized item goes alone)."""
    result: list[list[Shippable]] = []
    current: list[Shippable] = []
    size = 0
    for item in items:
        item_size = encoded_size(item) + 1
        if current and (size + item_size > max_bytes or len(current) >= max_items):
            result.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        result.append(current)
    return result


def halves(batch: Sequence[T]) -> tuple[list[T], list[T]]:
    middle = len(batch) // 2
    return list(batch[:middle]), list(batch[middle:])


def flatten(groups: Iterable[Sequence[T]]) -> list[T]:
    return [item for group in groups for item in group]
