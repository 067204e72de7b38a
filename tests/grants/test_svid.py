"""SVID fetch failures map onto the two identity reasons, failing closed."""

from __future__ import annotations

import pytest

from grantbox.grants.svid import identity_failure
from grantbox.identity import IdentityDenied, IdentityUnavailable


@pytest.mark.parametrize(
    ("exc", "reason", "detail"),
    [
        (
            IdentityDenied("workload API at /s answered PERMISSION_DENIED"),
            "workload_identity_denied",
            "JWT-SVID fetch denied: workload API at /s answered PERMISSION_DENIED",
        ),
        (
            IdentityUnavailable("no agent\r\nat /s"),
            "workload_identity_unavailable",
            "JWT-SVID fetch failed: no agentat /s",
        ),
        (
            RuntimeError("eyJhbGciOi.secret.svid"),
            "workload_identity_unavailable",
            "JWT-SVID fetch failed: RuntimeError",
        ),
        (
            ConnectionResetError(),
            "workload_identity_unavailable",
            "JWT-SVID fetch failed: ConnectionResetError",
        ),
    ],
)
def test_identity_failure(exc: BaseException, reason: str, detail: str) -> None:
    error = identity_failure(exc)
    assert error.reason == reason
    assert error.detail == detail


def test_identity_errors_map_by_class_onto_the_vocabulary() -> None:
    """The engine never reads an identity error's own reason text: the class decides."""
    from grantbox.grants import GrantFailure

    assert identity_failure(IdentityDenied("no")).reason is GrantFailure.WORKLOAD_IDENTITY_DENIED
    unavailable = identity_failure(IdentityUnavailable("down"))
    assert unavailable.reason is GrantFailure.WORKLOAD_IDENTITY_UNAVAILABLE
