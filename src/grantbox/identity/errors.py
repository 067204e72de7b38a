"""Identity failures, one class per reason of DESIGN §3.4.

The reasons are members of :class:`grantbox.grants.GrantFailure`, the one failure
vocabulary, so the grant engine and the proxy report them unchanged.

::

    IdentityError                 (reason: GrantFailure, detail: sanitised, never an SVID)
    ├── IdentityUnavailable       workload_identity_unavailable: no agent, agent broken, bad answer
    └── IdentityDenied            workload_identity_denied: the agent refused this caller
"""

from __future__ import annotations

from typing import ClassVar

from grantbox.grants.errors import GrantFailure


class IdentityError(Exception):
    """Obtaining a workload identity failed; ``reason`` is the stable code callers report."""

    reason: ClassVar[GrantFailure] = GrantFailure.WORKLOAD_IDENTITY_UNAVAILABLE

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class IdentityUnavailable(IdentityError):
    """No usable Workload API answered within the deadline."""

    reason: ClassVar[GrantFailure] = GrantFailure.WORKLOAD_IDENTITY_UNAVAILABLE


class IdentityDenied(IdentityError):
    """The Workload API answered, but holds no identity for this caller."""

    reason: ClassVar[GrantFailure] = GrantFailure.WORKLOAD_IDENTITY_DENIED
