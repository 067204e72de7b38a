"""The failure taxonomy: one exception per DESIGN §3.4 reason, drawn in the module docstring."""

from __future__ import annotations

import pytest

import grantbox.grants.errors as errors_module
from grantbox import grants
from grantbox.grants.errors import (
    ERRORS_BY_REASON,
    REASONS,
    GrantFailure,
    error_for_reason,
    failure_of,
)

DESIGN_REASONS = {
    "workload_identity_unavailable",
    "workload_identity_denied",
    "token_endpoint_unreachable",
    "token_endpoint_timeout",
    "token_endpoint_rejected",
    "token_endpoint_error",
    "token_malformed",
    "grant_misconfigured",
}


def test_one_exception_per_design_reason() -> None:
    assert set(REASONS) == DESIGN_REASONS
    assert len({cls for cls in ERRORS_BY_REASON.values()}) == len(DESIGN_REASONS)
    for reason, cls in ERRORS_BY_REASON.items():
        assert issubclass(cls, grants.GrantError)
        assert cls.reason == reason
        assert getattr(grants, cls.__name__) is cls


def test_docstring_draws_every_exception_and_reason() -> None:
    doc = errors_module.__doc__ or ""
    for reason, cls in ERRORS_BY_REASON.items():
        assert f"{cls.__name__}" in doc
        assert reason in doc


@pytest.mark.parametrize("reason", sorted(DESIGN_REASONS))
def test_error_for_reason_builds_the_matching_class(reason: str) -> None:
    error = error_for_reason(reason, "why")
    assert error.reason == reason
    assert error.detail == "why"
    assert str(error) == f"{reason}: why"


def test_unknown_reason_fails_closed_as_endpoint_error() -> None:
    assert error_for_reason("made_up", "x").reason == "token_endpoint_error"
    assert failure_of(None) is GrantFailure.TOKEN_ENDPOINT_ERROR
    assert failure_of("workload_identity_denied") is GrantFailure.WORKLOAD_IDENTITY_DENIED


def test_the_enum_is_the_one_vocabulary() -> None:
    """Every grant error carries an enum member (not a look-alike string); identity errors
    are mapped onto members by class (tests/grants/test_svid.py)."""
    assert {member.value for member in GrantFailure} == DESIGN_REASONS
    assert frozenset(GrantFailure) == REASONS
    for cls in ERRORS_BY_REASON.values():
        assert isinstance(cls.reason, GrantFailure)


def test_repr_and_str_show_the_reason_text() -> None:
    error = error_for_reason(GrantFailure.TOKEN_MALFORMED, "why")
    assert repr(error) == "TokenMalformed(reason='token_malformed', detail='why')"
    assert str(error) == "token_malformed: why"
