"""The one place a request's outcome is recorded: one OCSF event, one metric update.

Every path - forward, CONNECT, plain HTTP and TLS inside a tunnel, ``tls: skip`` tunnels,
requests refused before their head parsed - ends in one :mod:`.flow` outcome, and the
connection code hands that outcome here exactly once.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from .answers import ErrorCode
from .destinations import IPAddress
from .events import http_activity
from .flow import Forward, Outcome, Refuse
from .metrics import ProxyMetrics
from .sink import EventQueue

log = logging.getLogger("grantbox.proxy")

EventSink = Callable[[dict[str, Any]], None]

# Upstream addresses whose text is remembered (an agent talks to few hosts).
ADDRESS_TABLE_SIZE = 1024


class Recorder:
    """Turns outcomes into events for ``sink`` (which must not block) and metrics."""

    def __init__(self, metrics: ProxyMetrics, sink: EventSink) -> None:
        self._metrics = metrics
        self._sink = sink
        self._allowed = metrics.requests.labels("allowed", "")
        self._audited = metrics.requests.labels("allowed", "audit")
        self._injected = metrics.injections.labels("injected")
        # A queue takes the builder: the event is built off the request's path, when written.
        self._defer = sink.defer if isinstance(sink, EventQueue) else None
        self._addresses: dict[IPAddress, str] = {}  # an upstream address as events show it

    def record(self, outcome: Outcome) -> None:
        build = self._forwarded(outcome) if isinstance(outcome, Forward) else self._refused(outcome)
        try:
            if self._defer is not None:
                self._defer(build)
            else:
                self._sink(build())
        except Exception:  # a broken sink must not break traffic
            log.exception("OCSF event sink failed")

    def _address(self, address: IPAddress | None) -> str:
        if address is None:
            return ""
        text = self._addresses.get(address)
        if text is None:
            if len(self._addresses) >= ADDRESS_TABLE_SIZE:
                self._addresses.clear()
            text = self._addresses[address] = str(address)
        return text

    def _forwarded(self, outcome: Forward) -> Callable[[], dict[str, Any]]:
        decision = outcome.decision
        (self._audited if decision.audit_denial else self._allowed).inc()
        binding_id = None
        binding_ids: tuple[str, ...] = ()
        if outcome.injected and decision.binding is not None:
            binding_id = decision.binding.id
            binding_ids = tuple(b.id for b in decision.bindings)
            self._injected.inc()
        if decision.audit_denial:
            log.warning("audit-mode endpoint let through: %s", decision.audit_denial)
        return functools.partial(
            http_activity,
            outcome.facts,
            dst_ip=self._address(outcome.address),
            allowed=True,
            entry=decision.entry,
            audit_denial=decision.audit_denial,
            binding_id=binding_id,
            binding_ids=binding_ids,
            credentials=outcome.credentials,
            websocket=outcome.websocket is not None,
            when=time.time(),
        )

    def _refused(self, outcome: Refuse) -> Callable[[], dict[str, Any]]:
        answer = outcome.answer
        self._metrics.requests.labels("denied", str(answer.code)).inc()
        binding_id = outcome.binding.id if outcome.binding is not None else None
        if answer.code is ErrorCode.TOKEN_GRANT_FAILED and answer.reason is not None:
            self._metrics.injections.labels(str(answer.reason)).inc()
            log.warning(
                "token grant failed for %s: %s (%s)", binding_id, answer.reason, answer.detail
            )
        else:
            log.info("proxy answered %s %s: %s", answer.status, answer.code, answer.detail)
        return functools.partial(
            http_activity,
            outcome.facts,
            when=time.time(),
            allowed=False,
            code=str(answer.code),
            detail=answer.detail,
            entry=outcome.entry,
            binding_id=binding_id if answer.reason is not None else None,
            binding_ids=tuple(b.id for b in outcome.bindings) if answer.reason else (),
            reason=str(answer.reason) if answer.reason is not None else None,
        )
