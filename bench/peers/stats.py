"""From per-round samples to the figures the report prints: plain functions, no I/O.

Routes are measured in alternating rounds, so a burst of load from elsewhere on the
machine lands on every route alike. A route's rate is all its requests over all its
measured time; its p50/p99 are the median of the rounds' percentiles. A ratio is the ratio
of those rates, with the spread of the per-round ratios (round i of one route against
round i of the other, which ran moments apart) next to it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Sample(Protocol):
    """One measured run of one route (wrk's or curl's result)."""

    @property
    def requests(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def p50_ms(self) -> float: ...
    @property
    def p99_ms(self) -> float: ...
    @property
    def errors(self) -> int: ...


def rate(sample: Sample) -> float:
    return sample.requests / sample.seconds if sample.seconds > 0 else 0.0


@dataclass(frozen=True)
class Summary:
    rounds: int
    requests: int
    errors: int
    rate: float  # requests per second over every round
    rate_low: float  # slowest round
    rate_high: float  # fastest round
    p50_ms: float  # median over rounds
    p99_ms: float  # median over rounds
    round_rates: tuple[float, ...]


def summarize(samples: Sequence[Sample]) -> Summary:
    if not samples:
        raise ValueError("no samples")
    seconds = sum(s.seconds for s in samples)
    rates = tuple(rate(s) for s in samples)
    return Summary(
        rounds=len(samples),
        requests=sum(s.requests for s in samples),
        errors=sum(s.errors for s in samples),
        rate=sum(s.requests for s in samples) / seconds if seconds > 0 else 0.0,
        rate_low=min(rates),
        rate_high=max(rates),
        p50_ms=statistics.median(s.p50_ms for s in samples),
        p99_ms=statistics.median(s.p99_ms for s in samples),
        round_rates=rates,
    )


@dataclass(frozen=True)
class Ratio:
    value: float
    low: float  # lowest per-round ratio
    high: float  # highest per-round ratio

    def text(self) -> str:
        if self.low == self.high:
            return f"{self.value:.2f}×"
        return f"{self.value:.2f}× ({self.low:.2f}–{self.high:.2f})"


def ratio(numerator: Summary, denominator: Summary) -> Ratio | None:
    """``numerator``'s rate over ``denominator``'s; None when the denominator did nothing."""
    if denominator.rate <= 0:
        return None
    pairs = [
        a / b for a, b in zip(numerator.round_rates, denominator.round_rates, strict=False) if b > 0
    ]
    value = numerator.rate / denominator.rate
    return Ratio(value, min(pairs, default=value), max(pairs, default=value))


def goal_line(name: str, measured: Ratio | None, goal: float) -> str:
    """``grantbox/tinyproxy 1.12× (goal ≥ 1.0×: met)``."""
    if measured is None:
        return f"{name}: not measured (goal ≥ {goal:g}×)"
    verdict = "met" if measured.value >= goal else "NOT met"
    return f"{name} {measured.text()} (goal ≥ {goal:g}×: {verdict})"
