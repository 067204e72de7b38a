"""OCSF events as the gateway stores them, and a supervisor's shipped batch read into them.

A sandbox's supervisor ships an event for every request its proxy serves, so a batch of them
is the gateway's busiest input. Each event is stored as the JSON text it arrived as: the
batch is checked to be JSON (msgspec checks a value without building it), each event to be
an object, and only what the row needs beside the text - ``kind``, and ``ts`` or ``time`` -
is decoded. Parsing every event into dicts only to encode it again cost about as much as
storing it. An event given as a mapping (an older caller, tests) is encoded once. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, NamedTuple

import msgspec
import orjson

MAX_EVENTS = 1000
"""Events in one shipped batch at most (the supervisor sends at most as many)."""
MAX_DATA = 16_384
"""An event's stored JSON text at most; a larger one is stored as a record saying so."""
MAX_KIND = 64
DAY = 86_400.0


class StoredEvent(NamedTuple):
    """One row of a sandbox's events: when it happened, its kind, its JSON text. (A named
    tuple: a thousand are made per shipped batch, at a third of a frozen dataclass's cost.)"""

    ts: float
    kind: str
    data: str


class BatchRefused(ValueError):
    """A shipped batch the gateway does not take; ``where`` names the part (``events.3``)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


_NUMBERS = (int, float)  # a tuple: ``int | float`` would build a union on every call


def plausible_time(seconds: Any, now: float) -> float:
    """A reported time (epoch seconds) unless missing or implausible (more than a day off
    the gateway's clock); then the time it arrived."""
    if type(seconds) is bool or not isinstance(seconds, _NUMBERS):
        return now
    try:
        return float(seconds) if abs(seconds - now) <= DAY else now
    except OverflowError:  # an integer past any float (JSON allows any number of digits)
        return now


def _when(ts: Any, millis: Any, now: float, has_ts: bool) -> float:
    if has_ts:
        return plausible_time(ts, now)
    if type(millis) is bool or not isinstance(millis, _NUMBERS):
        return now
    try:
        return plausible_time(millis / 1000.0, now)
    except OverflowError:  # an integer past any float
        return now


def event_time(event: Mapping[str, Any], now: float) -> float:
    """When an event happened: its ``ts`` (seconds) or OCSF ``time`` (milliseconds)."""
    return _when(event.get("ts"), event.get("time"), now, "ts" in event)


def _kind(value: Any) -> str:
    return str(value or "event")[:MAX_KIND]


def _bounded(data: str, kind: str) -> str:
    """The event's text whole, or (when larger than the bound) a record saying so. Never
    JSON cut in the middle, which would break every later read of the events."""
    if len(data) <= MAX_DATA:
        return data
    return json.dumps({"kind": kind, "truncated": True, "size": len(data)})


def stored_event(event: Mapping[str, Any], now: float) -> StoredEvent:
    """An event given as a mapping, encoded once (sorted keys, orjson's speed)."""
    kind = _kind(event.get("kind"))
    try:
        data = orjson.dumps(event, default=str, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # beyond orjson (an integer past 64 bits, a key not a string)
        data = json.dumps(event, sort_keys=True, default=str)
    return StoredEvent(event_time(event, now), kind, _bounded(data, kind))


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_EVENTS)]


class _Row(msgspec.Struct):
    """What a row needs from an event; every other member is only checked to be JSON."""

    kind: Any = None
    time: Any = None
    ts: Any = msgspec.UNSET


_BATCH = msgspec.json.Decoder(_Batch)
_ROW = msgspec.json.Decoder(_Row)


def read_shipped(body: bytes, now: float) -> list[StoredEvent]:
    """``{"events": [...]}`` as shipped by a supervisor, each event kept as its text; or
    :class:`BatchRefused` (nothing of the batch is taken)."""
    try:
        batch = _BATCH.decode(body)
    except msgspec.ValidationError as exc:
        raise BatchRefused("body", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BatchRefused("body", f"not JSON: {exc}") from None
    stored: list[StoredEvent] = []
    decode, unset = _ROW.decode, msgspec.UNSET
    for index, raw in enumerate(batch.events):
        try:
            row = decode(raw)
            text = bytes(raw).decode("utf-8")
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            raise BatchRefused(f"events.{index}", "must be a JSON object") from None
        kind = _kind(row.kind)
        ts = _when(row.ts, row.time, now, row.ts is not unset)
        stored.append(StoredEvent(ts, kind, _bounded(text, kind)))
    return stored
