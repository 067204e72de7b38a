"""``--since``: an RFC 3339 time, or a duration back from now (``90s``, ``5m``, ``1h30m``, ``2d``).

Durations are turned into an absolute time here, on the operator's clock, so the gateway
only ever receives RFC 3339.
"""

from __future__ import annotations

import re
import time

import click

from grantbox.gateway.timestamps import parse_rfc3339, rfc3339

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:(\d+)([smhd]))+")
_PART = re.compile(r"(\d+)([smhd])")


def parse_since(text: str, now: float) -> float:
    """Epoch seconds (pure: ``now`` is given); ValueError with a usable message."""
    value = text.strip()
    if _DURATION.fullmatch(value):
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(value))
        return now - seconds
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (like 30s, 5m, 1h30m, 2d) nor an RFC 3339 "
            "time (like 2025-01-31T12:00:00Z)"
        ) from None


class SinceType(click.ParamType[str]):
    """Click's face of :func:`parse_since`: converts to an RFC 3339 string."""

    name = "TIME|DURATION"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        try:
            return rfc3339(parse_since(str(value), time.time()))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
