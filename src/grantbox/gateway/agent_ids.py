"""Kernel uids for sandbox agents: one per live sandbox, from a range reserved for grantbox.

Two sandboxes whose agents share a uid are one user to the kernel: each could signal,
trace or open what the other left behind. So the gateway hands every sandbox a uid of its
own (its gid is the same number) when it is created, records it on the sandbox's row (a
unique column, so no two live sandboxes can hold one even across replicas) and frees it
when the row goes, which happens only after the driver confirmed the sandbox is gone.

The default range starts at 1,900,000,000: above systemd's container range
(524288-1879048191) and far above the subordinate ids ``useradd`` hands out
(100000-600100000 by default), below 2^31 where some tools treat ids as signed, and
outside every range a distribution gives to users or services. 65536 of them allow as many
live sandboxes. ``gateway serve``/``up`` take ``--agent-uids FIRST:COUNT`` (or
``GRANTBOX_AGENT_UIDS``) for hosts that reserve another range.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_FIRST = 1_900_000_000
DEFAULT_COUNT = 65_536
LOWEST_ALLOWED = 65_536  # never a system, login or nobody id
HIGHEST_ALLOWED = 2**31 - 2


@dataclass(frozen=True, slots=True)
class UidRange:
    first: int = DEFAULT_FIRST
    count: int = DEFAULT_COUNT

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("an agent uid range needs at least one uid")
        if self.first < LOWEST_ALLOWED or self.last > HIGHEST_ALLOWED:
            raise ValueError(
                f"agent uids must lie between {LOWEST_ALLOWED} and {HIGHEST_ALLOWED}, "
                f"not {self.first}-{self.last}"
            )

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.first <= uid <= self.last


def parse_uid_range(text: str) -> UidRange:
    """``FIRST:COUNT`` → :class:`UidRange`; ValueError with the reason otherwise."""
    first, sep, count = text.strip().partition(":")
    if not sep or not first.isdigit() or not count.isdigit():
        raise ValueError(f"agent uid range {text!r} must be FIRST:COUNT, e.g. 1900000000:65536")
    return UidRange(int(first), int(count))


def lowest_free(ids: UidRange, taken: Iterable[int]) -> int | None:
    """The lowest uid of ``ids`` not in ``taken``, or None when every one is in use."""
    used = {uid for uid in taken if uid in ids}
    if len(used) >= ids.count:
        return None
    for offset in range(ids.count):
        if ids.first + offset not in used:
            return ids.first + offset
    return None


def choose_free(
    ids: UidRange, taken: Iterable[int], attempt: int, rng: random.Random | None = None
) -> int | None:
    """The lowest free uid on a first attempt; after losing a race to another replica, one
    of the lowest few free ones at random, so racing replicas stop picking the same one."""
    used = {uid for uid in taken if uid in ids}
    if attempt == 0:
        return lowest_free(ids, used)
    candidates: list[int] = []
    for offset in range(ids.count):
        if ids.first + offset not in used:
            candidates.append(ids.first + offset)
            if len(candidates) == SPREAD:
                break
    if not candidates:
        return None
    return (rng or _RNG).choice(candidates)


SPREAD = 64
_RNG = random.SystemRandom()
