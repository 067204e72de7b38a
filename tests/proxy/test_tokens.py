"""Grant results become a header only when safe; failures map to DESIGN §3.4 reasons."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from grantbox.grants import (
    REASONS,
    GrantError,
    GrantMisconfigured,
    TokenEndpointTimeout,
    TokenEndpointUnreachable,
    WorkloadIdentityUnavailable,
)
from grantbox.profiles import GrantBinding
from grantbox.proxy import credential_header, grant_failure_reason
from grantbox.proxy.answers import GRANT_FAILURE_REASONS
from grantbox.proxy.tokens import InjectionError
from tests.support.proxy_harness import endpoint, grant_profile, make_config


def _binding(**changes: Any) -> GrantBinding:
    profile = grant_profile("alpha", [endpoint("api.example.com", 443)])
    (binding,) = make_config(providers=[("alpha", profile)]).bindings.bindings
    return dataclasses.replace(binding, **changes)


def test_bearer_and_header_placement() -> None:
    assert credential_header(_binding(), "abc.DEF-_~+/=") == (
        "Authorization",
        "Bearer abc.DEF-_~+/=",
    )
    assert credential_header(_binding(header_name="X-Api-Token", header_style="header"), "abc") == (
        "X-Api-Token",
        "abc",
    )


@pytest.mark.parametrize("token", ["", "a b", "a\r\nX-Evil: 1", "tok\x00", "é", "a=b"])
def test_tokens_that_are_not_token68_never_become_headers(token: str) -> None:
    with pytest.raises(InjectionError) as info:
        credential_header(_binding(), token)
    assert info.value.reason == "token_malformed"


@pytest.mark.parametrize("name", ["Host", "Content-Length", "Transfer-Encoding", "Bad Name"])
def test_framing_header_names_are_a_misconfiguration(name: str) -> None:
    with pytest.raises(InjectionError) as info:
        credential_header(_binding(header_name=name), "abc")
    assert info.value.reason == "grant_misconfigured"


def test_our_reason_list_is_the_engines() -> None:
    assert set(REASONS) == GRANT_FAILURE_REASONS


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (WorkloadIdentityUnavailable("no socket"), "workload_identity_unavailable"),
        (TokenEndpointUnreachable("refused"), "token_endpoint_unreachable"),
        (TokenEndpointTimeout("slow"), "token_endpoint_timeout"),
        (GrantMisconfigured("bad"), "grant_misconfigured"),
        (GrantError("generic"), "token_endpoint_error"),
        (RuntimeError("a bug"), "token_endpoint_error"),
    ],
)
def test_failure_reasons(exc: Exception, reason: str) -> None:
    assert grant_failure_reason(exc) == reason
