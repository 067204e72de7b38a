"""The token cache as plain state: bounded LRU entries and the decision for a lookup.

No clocks, tasks or locks live here; the engine passes ``now`` in and acts on the
:class:`Lookup` it gets back. That keeps every rule (serve, renew ahead, serve the
remembered failure, ask again) testable with numbers.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from .answer import is_token68
from .errors import GrantError, TokenMalformed
from .lifetime import backoff_delay, persistence, refresh_after
from .request import CacheKey


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A token and the moment the cache stops serving it.

    ``expires_at`` is on the engine's clock (``time.monotonic()`` unless another clock was
    injected), so wall-clock jumps neither revive nor kill a token. The value is never
    shown by ``repr``.
    """

    value: str = field(repr=False)
    expires_at: float

    def __post_init__(self) -> None:
        if not is_token68(self.value):
            raise TokenMalformed("access_token is not a token68 value")


@dataclass(slots=True)
class Entry:
    """What the cache knows about one key: a token, a remembered failure, or both."""

    token: AccessToken | None = None
    refresh_at: float = 0.0
    failure: GrantError | None = None
    failures: int = 0
    retry_at: float = 0.0


class Lookup(enum.Enum):
    HIT = "hit"  # serve entry.token
    HIT_RENEW = "hit_renew"  # serve entry.token and renew it in the background
    FAILED = "failed"  # raise the remembered failure
    MISS = "miss"  # obtain a token now


def decide(entry: Entry | None, now: float, renewing: bool) -> Lookup:
    """What a lookup at ``now`` amounts to; ``renewing`` says a request is already running."""
    if entry is None:
        return Lookup.MISS
    token = entry.token
    if token is not None and now < token.expires_at:
        backing_off = entry.failure is not None and now < entry.retry_at
        if now >= entry.refresh_at and not renewing and not backing_off:
            return Lookup.HIT_RENEW
        return Lookup.HIT
    if entry.failure is not None and now < entry.retry_at:
        return Lookup.FAILED
    return Lookup.MISS


class TokenCache:
    """Bounded LRU map of :class:`CacheKey` to :class:`Entry`."""

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: CacheKey) -> Entry | None:
        """The entry for a key, marked as most recently used."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _slot(self, key: CacheKey) -> Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Entry()
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry

    def store_token(self, key: CacheKey, token: AccessToken, ttl: float, stored_at: float) -> None:
        """Keep a fresh token; a success forgets earlier failures."""
        entry = self._slot(key)
        entry.token = token
        entry.refresh_at = stored_at + refresh_after(ttl)
        entry.failure = None
        entry.failures = 0
        entry.retry_at = 0.0

    def store_failure(self, key: CacheKey, error: GrantError, now: float, jitter: float) -> float:
        """Remember a failure until the next backoff step; returns the retry time.

        The step depends on whether the failure may heal soon and on any ``Retry-After`` the
        endpoint sent (:mod:`.lifetime`). A still-valid token is kept: callers go on using it
        while renewal backs off.
        """
        entry = self._slot(key)
        entry.failure = error
        entry.failures += 1
        kind = persistence(str(error.reason), error.status)
        entry.retry_at = now + backoff_delay(entry.failures, jitter, kind, error.retry_after)
        return entry.retry_at

    def retain(self, keep: Callable[[CacheKey], bool]) -> int:
        """Drop every entry whose key ``keep`` refuses; returns how many were dropped."""
        doomed = [key for key in self._entries if not keep(key)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def keys(self) -> Collection[CacheKey]:
        return list(self._entries)
