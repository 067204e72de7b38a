"""What the supervisor ships to the operator's record, bounded so the agent cannot blind it.

An agent controls its output: a line of control bytes grows sixfold once JSON-escaped, and a
batch of such lines could exceed the gateway's body limit and be refused forever. So each
log message is cut to a fixed encoded size (and says so), batches are cut by encoded size
well below the gateway's limit, and a batch the gateway still refuses is split, then
dropped item by item with a count (see the supervisor's shipping loop). Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from grantbox.proxy import event_json

T = TypeVar("T")

MAX_MESSAGE_BYTES = 8 * 1024
"""A log message's JSON-encoded size at most (the gateway accepts far more)."""
MAX_BATCH_BYTES = 256 * 1024
"""A shipped batch's JSON-encoded size at most: a sixteenth of the gateway's 4 MiB limit."""
MAX_BATCH_ITEMS = 1000
TRUNCATED = " [grantbox: line truncated, {size} bytes in all]"


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as compact ASCII JSON (``json``'s, computed at orjson's speed:
    every proxied request's event is measured)."""
    return len(event_json(value))


def bounded_message(text: str, limit: int = MAX_MESSAGE_BYTES) -> tuple[str, bool]:
    """``(message, truncated)``: ``text`` cut so its JSON encoding fits ``limit``, the cut
    marked in the message itself."""
    if encoded_size(text) <= limit:
        return text, False
    marker = TRUNCATED.format(size=len(text.encode(errors="replace")))
    budget = limit - encoded_size(marker)
    low, high = 0, len(text)
    while low < high:  # the longest prefix whose encoding fits the budget
        middle = (low + high + 1) // 2
        if encoded_size(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low] + marker, True


def batches(
    items: Sequence[Mapping[str, Any]],
    max_bytes: int = MAX_BATCH_BYTES,
    max_items: int = MAX_BATCH_ITEMS,
) -> list[list[Mapping[str, Any]]]:
    """Consecutive runs of ``items`` within both bounds (an oversized item goes alone)."""
    result: list[list[Mapping[str, Any]]] = []
    current: list[Mapping[str, Any]] = []
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
