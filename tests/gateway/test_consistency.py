"""Write-time rules on plain data: names, provider credentials, ambiguity messages."""

from __future__ import annotations

import pytest

from grantbox.gateway.consistency import (
    SandboxAttachments,
    ambiguity_messages,
    check_credentials,
    check_name,
    refuse_ambiguity,
)
from grantbox.gateway.errors import AmbiguousGrants, InvalidRequest
from grantbox.profiles import Profile
from tests.support.gateway_server import grant_profile

GRANT = Profile.model_validate(grant_profile("alpha", path="/v1/**"))
MIXED = Profile.model_validate(
    {
        "id": "mixed",
        "credentials": [
            {"name": "api_key", "required": True, "auth_style": "header", "header_name": "X-Key"},
            {"name": "note", "required": False},
            {
                "name": "token",
                "token_grant": {"token_endpoint": "https://issuer.example.com/token"},
            },
        ],
        "endpoints": [{"host": "api.example.com", "port": 443}],
    }
)


@pytest.mark.parametrize("name", ["a", "box-1", "x" * 63, "0abc"])
def test_good_names(name: str) -> None:
    check_name("sandbox", name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "a.b", "x" * 64, "a b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidRequest, match="must be 1-63 lowercase"):
        check_name("sandbox", name)


def test_runtime_credentials() -> None:
    check_credentials(GRANT, True, {})
    with pytest.raises(InvalidRequest, match="requires stored api_key"):
        check_credentials(MIXED, True, {})
    with pytest.raises(InvalidRequest, match="not both"):
        check_credentials(GRANT, True, {"access_token": "x"})


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({}, "needs credentials"),
        ({"api_key": "k", "bogus": "v"}, "has no credential 'bogus'"),
        ({"api_key": "k", "token": "t"}, "obtained at run time"),
        ({"api_key": ""}, "must not be empty"),
        ({"note": "n"}, "requires credential\\(s\\) api_key"),
    ],
)
def test_stored_credentials(values: dict[str, str], problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        check_credentials(MIXED, False, values)


def test_stored_credentials_accepted() -> None:
    check_credentials(MIXED, False, {"api_key": "k"})
    check_credentials(MIXED, False, {"api_key": "k", "note": "n"})


def test_ambiguity_messages_name_the_sandbox_and_both_owners() -> None:
    clash = Profile.model_validate(grant_profile("clash", path="/v1/**"))
    other = Profile.model_validate(grant_profile("other", path="/v2/**"))
    assert ambiguity_messages([SandboxAttachments("box", (("pa", GRANT), ("po", other)))]) == []
    candidates = [
        SandboxAttachments("quiet", (("pa", GRANT),)),
        SandboxAttachments("box", (("pa", GRANT), ("pc", clash))),
    ]
    [message] = ambiguity_messages(candidates)
    assert message.startswith("sandbox 'box': token grants 'pa:access_token' and 'pc:access_token'")
    with pytest.raises(AmbiguousGrants) as refused:
        refuse_ambiguity("attach", candidates)
    assert refused.value.message == f"attach refused: {message}"
    assert refused.value.status == 409
