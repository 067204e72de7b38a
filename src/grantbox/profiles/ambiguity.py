"""Ambiguity: two bindings that could both claim one request with equal specificity.

Specificity is a strict total order on distinct overlapping patterns (see
:mod:`.patterns`), so two bindings tie on some request exactly when they share port, host
pattern and path pattern. The check is still written in terms of specificity and overlap
so that it states the rule, and the property tests hold the shortcut to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .bindings import GrantBinding
from .patterns import hosts_overlap, paths_overlap


@dataclass(frozen=True, slots=True)
class Collision:
    """Two bindings of different owners that tie on the same requests."""

    first: GrantBinding
    second: GrantBinding

    @property
    def where(self) -> str:
        return f"{self.first.host}:{self.first.port} path '{self.first.path or '/**'}'"

    def message(self) -> str:
        return (
            f"token grants '{self.first.owner}' and '{self.second.owner}' are ambiguous for "
            f"{self.first.host}:{self.first.port} path selectors "
            f"'{self.first.path or '/**'}' and '{self.second.path or '/**'}'; make one "
            "host or path selector more specific, or attach only one matching provider"
        )


def tie(a: GrantBinding, b: GrantBinding) -> bool:
    """Whether some request matches both with equal specificity."""
    return (
        a.port == b.port
        and a.specificity() == b.specificity()
        and hosts_overlap(a.host_pattern, b.host_pattern)
        and paths_overlap(a.path_pattern, b.path_pattern)
    )


def find_collisions(bindings: Iterable[GrantBinding]) -> list[Collision]:
    """Every pair of bindings from different ``provider:credential`` owners that tie.

    Bindings are grouped by their selector (port, host, path), which is where ties can
    occur; within a group every pair of distinct owners is reported once.
    """
    groups: dict[tuple[str, int, str], list[GrantBinding]] = {}
    for binding in bindings:
        groups.setdefault(binding.selector, []).append(binding)
    collisions: list[Collision] = []
    for selector in sorted(groups, key=lambda s: (s[1], s[0], s[2])):
        members = sorted(groups[selector], key=lambda b: b.owner)
        for i, first in enumerate(members):
            for second in members[i + 1 :]:
                if first.owner != second.owner and tie(first, second):
                    collisions.append(Collision(first, second))
    return collisions
