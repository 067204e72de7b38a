"""A bounded outbox for logs and events waiting to be shipped to the gateway.

When the gateway is slow or away, the oldest entries are dropped (and counted) rather than
letting an agent that prints without pause grow the supervisor's memory.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Outbox(Generic[T]):
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._items: deque[T] = deque(maxlen=capacity)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)

    def take(self, limit: int) -> list[T]:
        """Remove and return up to ``limit`` of the oldest entries."""
        count = min(limit, len(self._items))
        return [self._items.popleft() for _ in range(count)]

    def give_back(self, items: list[T]) -> None:
        """Return entries that could not be shipped, oldest first, keeping the bound."""
        for item in reversed(items):
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
                continue
            self._items.appendleft(item)
