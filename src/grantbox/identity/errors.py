"""Identity failures, one class per reason of DESIGN §3.4.

::

    IdentityError                 (reason: str, detail: sanitised, never an SVID)
    ├── IdentityUnavailable       workload_identity_unavailable: no agent, agent broken, bad answer
    └── IdentityDenied            workload_identity_denied: the agent refused this caller
"""

from __future__ import annotations

from typing import ClassVar


class IdentityError(Exception):
    """Obtaining a workload identity failed; ``reason`` is the stable code callers report."""

    reason: ClassVar[str] = "workload_identity_unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class IdentityUnavailable(IdentityError):
    """No usable Workload API answered within the deadline."""

    reason: ClassVar[str] = "workload_identity_unavailable"


class IdentityDenied(IdentityError):
    """The Workload API answered, but holds no identity for this caller."""

    reason: ClassVar[str] = "workload_identity_denied"
