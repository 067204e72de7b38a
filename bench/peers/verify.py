"""Proof that every proxy did the work: nginx's access log, read after nginx has stopped.

Each route has its own nginx port, and nginx logs ``<port> "<Authorization>"`` for every
request. A route passes when every line on its port carries the header value the route
must add (none for the direct route) and nginx saw at least as many requests as the load
tools counted as answered. A proxy that skipped the header, or answered requests itself,
fails here and the report says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PortLog:
    lines: int
    values: Counter[str]


def read_access_log(lines: Iterable[str]) -> dict[int, PortLog]:
    """``<port> "<value>"`` lines, grouped by port (nginx logs an absent header as ``-``)."""
    values: dict[int, Counter[str]] = {}
    for line in lines:
        port_text, _, quoted = line.strip().partition(" ")
        if not port_text.isdigit():
            continue
        value = quoted[1:-1] if len(quoted) >= 2 and quoted[0] == quoted[-1] == '"' else quoted
        values.setdefault(int(port_text), Counter())[value] += 1
    return {port: PortLog(sum(c.values()), c) for port, c in values.items()}


@dataclass(frozen=True)
class Verdict:
    route: str
    ok: bool
    seen: int  # requests nginx logged on the route's port
    counted: int  # requests the load tools counted as answered
    wrong: int  # lines without the expected header
    distinct: int  # distinct header values (1 for a cached token)

    def text(self) -> str:
        if self.ok:
            return (
                f"{self.route}: {self.seen} requests reached nginx, every one with the "
                f"expected header ({self.distinct} distinct value(s))"
            )
        return (
            f"{self.route}: FAILED — {self.wrong} of {self.seen} requests at nginx lacked "
            f"the expected header; load tools counted {self.counted}"
        )


def verify(
    logs: Mapping[int, PortLog],
    routes: Mapping[str, tuple[int, Callable[[str], bool], int]],
) -> list[Verdict]:
    """``routes``: key -> (nginx port, header check, requests the tools counted)."""
    verdicts = []
    for key, (port, expect, counted) in routes.items():
        log = logs.get(port, PortLog(0, Counter()))
        wrong = sum(n for value, n in log.values.items() if not expect(value))
        ok = wrong == 0 and log.lines >= counted
        verdicts.append(Verdict(key, ok, log.lines, counted, wrong, len(log.values)))
    return verdicts
