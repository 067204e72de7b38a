"""When to retry a Workload API call, how long to wait, and what a failure means.

Pure functions over status-code names and numbers, so the schedule and the mapping to
DESIGN §3.4 reasons are tested on their own; the client only sleeps and calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import IdentityDenied, IdentityError, IdentityUnavailable

RETRYABLE_CODES = frozenset({"UNAVAILABLE", "PERMISSION_DENIED", "DEADLINE_EXCEEDED"})
"""UNAVAILABLE (agent starting or gone) and PERMISSION_DENIED (identity not registered yet)
come from the SPIFFE spec; DEADLINE_EXCEEDED is one call hitting its own timeout, which
the overall deadline still bounds."""

DENIED_CODES = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED"})


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: each wait is in [delay/2, delay]."""

    base: float = 0.05
    factor: float = 2.0
    cap: float = 1.0

    def delay(self, attempt: int, jitter: float) -> float:
        """Wait before retry number ``attempt`` (0-based); ``jitter`` is uniform in [0, 1]."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")
        ceiling = self.cap if attempt > 64 else min(self.cap, self.base * self.factor**attempt)
        return ceiling * (0.5 + jitter / 2.0)


MIN_ATTEMPT_BUDGET = 0.05
"""Never start an attempt with less time than this: it could only end in DEADLINE_EXCEEDED
and would hide the answer that explains the failure (say, PERMISSION_DENIED)."""


def next_wait(
    backoff: Backoff,
    attempt: int,
    jitter: float,
    remaining: float,
    min_attempt: float = MIN_ATTEMPT_BUDGET,
) -> float | None:
    """How long to sleep before the next attempt, or None when the deadline leaves no room.

    The wait is clipped so the next attempt still has ``min_attempt`` seconds, so the last
    attempt happens close to the deadline rather than being skipped.
    """
    if remaining <= min_attempt:
        return None
    return min(backoff.delay(attempt, jitter), remaining - min_attempt)


def is_retryable(code_name: str) -> bool:
    """Whether a gRPC status (by name) is worth another attempt within the deadline."""
    return code_name in RETRYABLE_CODES


_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_.-]*")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
MAX_DETAIL = 200


def sanitise_detail(text: str) -> str:
    """A server message made safe for logs: printable ASCII, no JWT-looking runs, bounded."""
    cleaned = _UNPRINTABLE.sub("?", text)
    cleaned = _JWT_LIKE.sub("[redacted]", cleaned)
    if len(cleaned) > MAX_DETAIL:
        cleaned = cleaned[: MAX_DETAIL - 3] + "..."
    return cleaned


def error_for_status(code_name: str, details: str | None, socket_path: str) -> IdentityError:
    """Map the final gRPC status of a Workload API call to our failure taxonomy."""
    summary = f"workload API at {socket_path} answered {code_name}"
    if details:
        summary = f"{summary}: {sanitise_detail(details)}"
    if code_name in DENIED_CODES:
        return IdentityDenied(summary)
    return IdentityUnavailable(summary)
