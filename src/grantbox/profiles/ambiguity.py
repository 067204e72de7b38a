"""Ambiguity: two credentials that would both write one header on one request.

A request may carry several credentials - a token grant in ``Authorization`` and another in
``X-Api-Key``, or a stored key - as long as each writes its own header (or query
parameter). For one header, the most specific binding that matches a request is the one
placed; two bindings of different owners that write the same header and tie on
specificity for some request are refused at every write.

Specificity is a strict total order on distinct overlapping patterns (see
:mod:`.patterns`), so two bindings tie on some request exactly when they share port, host
pattern and path pattern. The check is still written in terms of specificity and overlap
so that it states the rule, and the property tests hold the shortcut to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from .bindings import GrantBinding
from .patterns import hosts_overlap, paths_overlap
from .static import StaticBinding

Placement = GrantBinding | StaticBinding
P = TypeVar("P", bound=GrantBinding | StaticBinding)


def placement_key(binding: Placement) -> str:
    """What a binding writes: a lower-case header name, or ``?param`` for a query
    parameter; ``""`` for a stored credential that only replaces its placeholder."""
    if isinstance(binding, GrantBinding):
        return binding.header_name.lower()
    return binding.placement_key


def _shown(key: str) -> str:
    return f"query parameter '{key[1:]}'" if key.startswith("?") else f"header '{key}'"


@dataclass(frozen=True, slots=True)
class Collision:
    """Two bindings of different owners that write one header and tie on some request."""

    first: Placement
    second: Placement

    @property
    def where(self) -> str:
        return f"{self.first.host}:{self.first.port} path '{self.first.path or '/**'}'"

    @property
    def place(self) -> str:
        return _shown(placement_key(self.first))

    def message(self) -> str:
        both_grants = isinstance(self.first, GrantBinding) and isinstance(self.second, GrantBinding)
        kind = "token grants" if both_grants else "credentials"
        return (
            f"{kind} '{self.first.owner}' and '{self.second.owner}' are ambiguous for "
            f"{self.first.host}:{self.first.port} path selectors "
            f"'{self.first.path or '/**'}' and '{self.second.path or '/**'}' (both set "
            f"{self.place}); make one host or path selector more specific, place one in "
            "another header, or attach only one matching provider"
        )


def tie(a: Placement, b: Placement) -> bool:
    """Whether some request matches both with equal specificity."""
    return (
        a.port == b.port
        and a.specificity() == b.specificity()
        and hosts_overlap(a.host_pattern, b.host_pattern)
        and paths_overlap(a.path_pattern, b.path_pattern)
    )


def find_collisions(*groups: Iterable[Placement]) -> list[Collision]:
    """Every pair of bindings from different ``provider:credential`` owners that write the
    same header and tie. Stored credentials that place nothing never collide.

    Bindings are grouped by their selector (port, host, path) and what they write, which
    is where ties can occur; within a group every pair of distinct owners is reported once.
    """
    buckets: dict[tuple[str, int, str, str], list[Placement]] = {}
    for group in groups:
        for binding in group:
            key = placement_key(binding)
            if key:
                buckets.setdefault((*binding.selector, key), []).append(binding)
    collisions: list[Collision] = []
    for bucket in sorted(buckets, key=lambda s: (s[1], s[0], s[2], s[3])):
        members = sorted(buckets[bucket], key=lambda b: b.owner)
        for i, first in enumerate(members):
            for second in members[i + 1 :]:
                if first.owner != second.owner and tie(first, second):
                    collisions.append(Collision(first, second))
    return collisions


def most_specific_each(bindings: Iterable[P], host: str, port: int, path: str) -> list[P]:
    """For each header (or query parameter) the bindings write, the most specific one that
    matches the request, in a stable order. Ties cannot happen in a validated set; if one
    slips through the choice is still deterministic (by id)."""
    best: dict[str, tuple[Any, P]] = {}
    for binding in bindings:
        key = placement_key(binding)
        if not key or not binding.matches(host, port, path):
            continue
        rank = (*binding.specificity(), binding.id)
        current = best.get(key)
        if current is None or rank > current[0]:
            best[key] = (rank, binding)
    return [best[key][1] for key in sorted(best)]
