"""Sandbox conditions: what a supervisor reports beside the phase, shaped like Kubernetes'.

A condition is a fact that holds or not (``status`` True/False/Unknown) with a CamelCase
``reason``, a human ``message`` and ``since``, the time its status last changed. The phase
says whether the sandbox runs; a condition says something else worth seeing while it does,
such as ``ShippingBacklog`` (the operator's record is behind). So a merely backlogged
sandbox stays ``ready``.

The gateway keeps the supervisor's latest report and stamps ``since`` itself: a condition
whose status did not change keeps its time, one that changed (or is new) gets the time of
the report. Pure functions over plain data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .timestamps import rfc3339

MAX_CONDITIONS = 8
MAX_MESSAGE = 1000
STATUSES = ("True", "False", "Unknown")


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""
    since: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The API form: ``since`` as RFC 3339 (UTC)."""
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "since": rfc3339(self.since),
        }

    def stored(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "since": self.since,
        }


def merge(
    stored: Sequence[Condition], reported: Iterable[Mapping[str, Any]], now: float
) -> tuple[Condition, ...]:
    """The conditions after a report: the reported ones (in type order), each keeping its
    stored ``since`` while its status is unchanged. A type the report leaves out is gone."""
    before = {condition.type: condition for condition in stored}
    merged: dict[str, Condition] = {}
    for item in reported:
        kind, status = str(item["type"]), str(item["status"])
        previous = before.get(kind)
        since = previous.since if previous is not None and previous.status == status else now
        merged[kind] = Condition(
            type=kind,
            status=status,
            reason=str(item.get("reason") or ""),
            message=str(item.get("message") or "")[:MAX_MESSAGE],
            since=since,
        )
    return tuple(merged[kind] for kind in sorted(merged))


def dumps(conditions: Sequence[Condition]) -> str:
    return json.dumps([c.stored() for c in conditions], sort_keys=True)


def loads(text: str | None) -> tuple[Condition, ...]:
    """Stored conditions; anything unreadable reads as none (the next report replaces it)."""
    try:
        items = json.loads(text or "[]")
    except ValueError:
        return ()
    if not isinstance(items, list):
        return ()
    found = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("type"), str):
            found.append(
                Condition(
                    type=item["type"],
                    status=str(item.get("status") or "Unknown"),
                    reason=str(item.get("reason") or ""),
                    message=str(item.get("message") or ""),
                    since=float(item.get("since") or 0.0),
                )
            )
    return tuple(found)
