"""The operator's record on its way out: bounded outboxes for events and log lines, shipped
to the gateway events first, with what was lost counted and said.

A batch the gateway refuses (413 or another 4xx) is split; a single item it still refuses
is dropped and counted, so nothing is retried unchanged forever. A gateway that is away or
failing (no answer, 429, 5xx) gets the batch back in the outbox for the next round; an
outbox that fills drops its oldest items (counted). The counts feed the supervisor's
metrics (:mod:`.metrics`) and the ``ShippingBacklog`` condition it reports with every
heartbeat, so a backlog is seen without turning the sandbox's phase to ``error``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .gateway_client import SupervisorClientError
from .outbox import Outbox
from .retry import transient
from .shipping import Shippable, batches, bounded_event, encoded_events, flatten, halves

log = logging.getLogger("grantbox.supervisor")

Item = Shippable
Send = Callable[[list[Item]], Awaitable[int]]

KINDS = ("events", "logs")
"""Shipped in this order: events first, so log lines can never hold them up."""
OUTBOX_CAPACITY = 10_000
SHIP_TAKE = 2_000
SHIPPING_BACKLOG = "ShippingBacklog"
_NOUNS = {"events": "events", "logs": "log lines"}


class Shipper:
    """Events and log lines waiting for the gateway, and how much of them was lost.

    ``send`` maps each kind to the gateway call that ships a batch of it. A gateway answer
    that the sandbox is gone propagates (the supervisor then tears the sandbox down).
    """

    def __init__(
        self,
        send: Mapping[str, Send],
        capacity: int = OUTBOX_CAPACITY,
        take: int = SHIP_TAKE,
    ) -> None:
        self._send = dict(send)
        self.capacity = capacity
        self._take = take
        self.outboxes: dict[str, Outbox[Item]] = {kind: Outbox(capacity) for kind in KINDS}
        self.refused_batches = dict.fromkeys(KINDS, 0)
        self.refused_items = dict.fromkeys(KINDS, 0)
        self._noted: dict[str, int] = {}

    def __repr__(self) -> str:
        waiting = ", ".join(f"{kind}={len(box)}" for kind, box in self.outboxes.items())
        return f"Shipper({waiting})"

    def event(self, item: Mapping[str, Any]) -> None:
        self.outboxes["events"].put(bounded_event(item))

    def encoded_events(self, lines: bytes) -> None:
        """Events a proxy worker encoded as JSON lines: queued as their bytes (see
        :func:`.shipping.encoded_events`); a line that is not an event is counted as
        refused."""
        events, malformed = encoded_events(lines)
        box = self.outboxes["events"]
        for event in events:
            box.put(event)
        if malformed:
            self.refused_items["events"] += malformed
            log.warning("%d proxy event lines were not JSON objects; dropped them", malformed)

    def log(self, message: str, stream: str, *, truncated: bool = False) -> None:
        line = {"message": message, "stream": stream, "ts": time.time(), "truncated": truncated}
        self.outboxes["logs"].put(line)

    def queued(self, kind: str) -> int:
        return len(self.outboxes[kind])

    def dropped(self, kind: str) -> int:
        """Items of ``kind`` dropped because the outbox was full."""
        return self.outboxes[kind].dropped

    async def ship_once(self) -> bool:
        """One round: each kind's oldest items (up to ``take``), events first; a kind the
        gateway cannot take now keeps what is left and never holds up the other.

        True when a kind had a full ``take`` and more waiting behind it, and the gateway
        took everything sent: a busy proxy makes events faster than one ``take`` per round,
        so the caller ships again at once rather than letting the outbox fill and drop them."""
        more, refused = False, False
        for kind in KINDS:
            items = self.outboxes[kind].take(self._take)
            pending = batches(items) if items else []
            while pending:
                if not await self._deliver(kind, pending[0]):
                    self.outboxes[kind].give_back(flatten(pending))
                    refused = True  # the gateway is away or failing: wait before retrying
                    break
                pending.pop(0)
            # A full take with more behind it is a backlog; anything less waits the
            # interval, so batches stay large (the gateway pays per batch, too).
            more = more or (len(items) == self._take and len(self.outboxes[kind]) > 0)
        self._note_losses()
        return more and not refused

    async def _deliver(self, kind: str, batch: list[Item]) -> bool:
        """Ship ``batch``; False when the gateway could not take it now (try again later)."""
        try:
            await self._send[kind](batch)
            return True
        except SupervisorClientError as exc:
            if exc.sandbox_gone:
                raise
            if transient(exc):
                log.warning("shipping %s failed: %s", _NOUNS[kind], exc)
                return False
            self.refused_batches[kind] += 1
            if len(batch) == 1:
                self.refused_items[kind] += 1
                log.warning("the gateway refused one of the %s (%s); dropped it", _NOUNS[kind], exc)
                return True
            first, second = halves(batch)
            return await self._deliver(kind, first) and await self._deliver(kind, second)

    def losses(self) -> dict[str, int]:
        """What the record lost so far, by what happened."""
        lost = {f"{_NOUNS[kind]} dropped (outbox full)": self.dropped(kind) for kind in KINDS}
        for kind in KINDS:
            lost[f"{_NOUNS[kind]} refused by the gateway"] = self.refused_items[kind]
        return {what: count for what, count in lost.items() if count}

    def _note_losses(self) -> None:
        """Say in the record itself when the record lost something (once per new loss)."""
        for what, count in self.losses().items():
            noted = self._noted.get(what, 0)
            if count > noted:
                self._noted[what] = count
                self.log(f"grantbox: {count - noted} {what} (total {count})", "supervisor")

    def backlogged(self) -> bool:
        """An outbox is at least half full: the gateway is not keeping up."""
        return any(len(box) * 2 >= self.capacity for box in self.outboxes.values())

    def condition(self) -> dict[str, str]:
        """The ``ShippingBacklog`` condition as the gateway takes it in a heartbeat."""
        events, logs = self.queued("events"), self.queued("logs")
        if self.backlogged():
            return {
                "type": SHIPPING_BACKLOG,
                "status": "True",
                "reason": "Backlogged",
                "message": f"{events} events and {logs} log lines waiting for the gateway",
            }
        lost = self.losses()
        message = f"keeping up: {events} events and {logs} log lines waiting"
        if lost:
            message += "; lost so far: " + ", ".join(f"{n} {what}" for what, n in lost.items())
        return {
            "type": SHIPPING_BACKLOG,
            "status": "False",
            "reason": "UpToDate",
            "message": message,
        }
