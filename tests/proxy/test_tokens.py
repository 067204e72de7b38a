"""Grant results become a header only when safe; failures carry the one vocabulary."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from grantbox.grants import GrantError, GrantFailure, GrantMisconfigured, TokenMalformed
from grantbox.profiles import GrantBinding
from grantbox.proxy import credential_header
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


@pytest.mark.parametrize(
    "token", ["", "a b", "a\r\nX-Evil: 1", "tok\x00", "é", "a=b", "tok\n", "tok\r\n"]
)
def test_tokens_that_are_not_token68_never_become_headers(token: str) -> None:
    with pytest.raises(TokenMalformed) as info:
        credential_header(_binding(), token)
    assert info.value.reason is GrantFailure.TOKEN_MALFORMED


@pytest.mark.parametrize("name", ["Host", "Content-Length", "Transfer-Encoding", "Bad Name"])
def test_framing_header_names_are_a_misconfiguration(name: str) -> None:
    with pytest.raises(GrantMisconfigured) as info:
        credential_header(_binding(header_name=name), "abc")
    assert info.value.reason is GrantFailure.GRANT_MISCONFIGURED


def test_header_failures_are_grant_errors() -> None:
    """The relay catches one type: what the header check raises is a GrantError."""
    assert issubclass(TokenMalformed, GrantError)
    assert issubclass(GrantMisconfigured, GrantError)
