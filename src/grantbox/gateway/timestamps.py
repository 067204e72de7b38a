"""Times on the wire are RFC 3339 in UTC with milliseconds (``2025-01-31T12:00:00.250Z``).

The store keeps epoch seconds (cheap to compare and index); everything an operator or a
script reads is converted here, once, so no epoch float ever leaves the API.
"""

from __future__ import annotations

import datetime as dt


def rfc3339(epoch: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def rfc3339_or_none(epoch: float | None) -> str | None:
    return None if epoch is None else rfc3339(epoch)


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 date-time; a missing offset is refused, not guessed."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2025-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z (UTC) or an offset like +02:00")
    return moment.timestamp()
