"""OCSF events: right classes and activity ids, real schemes, nothing secret."""

from __future__ import annotations

import json

import pytest

from grantbox.proxy.events import HTTP_ACTIVITY, RequestFacts, http_activity


def _facts(method: str = "GET", scheme: str = "https", port: int = 443) -> RequestFacts:
    return RequestFacts(
        method=method,
        scheme=scheme,
        host="alpha.example",
        port=port,
        path="/v1/x",
        fields=((b"Authorization", b"Bearer agent-secret"), (b"X-Api-Token", b"agent-copy")),
    )


@pytest.mark.parametrize(
    ("method", "activity"),
    [
        ("CONNECT", 1),
        ("DELETE", 2),
        ("GET", 3),
        ("HEAD", 4),
        ("OPTIONS", 5),
        ("POST", 6),
        ("PUT", 7),
        ("TRACE", 8),
        ("PATCH", 9),
        ("PROPFIND", 99),
    ],
)
def test_activity_follows_the_method_for_success_and_failure(method: str, activity: int) -> None:
    for event in (
        http_activity(_facts(method), allowed=True),
        http_activity(_facts(method), allowed=False, code="policy_denied"),
        http_activity(
            _facts(method),
            allowed=False,
            code="token_grant_failed",
            binding_id="b",
            reason="token_endpoint_timeout",
        ),
    ):
        assert event["class_uid"] == HTTP_ACTIVITY
        assert event["activity_id"] == activity
        assert event["type_uid"] == HTTP_ACTIVITY * 100 + activity


def test_a_failed_injection_says_so_in_the_requests_one_event() -> None:
    event = http_activity(
        _facts("GET"),
        allowed=False,
        code="token_grant_failed",
        binding_id="b",
        reason="token_malformed",
    )
    assert event["activity_id"] == 3  # GET, not "Fail=4" (HEAD)
    assert (event["action_id"], event["disposition_id"], event["status_id"]) == (2, 2, 2)
    assert event["unmapped"]["injection"] == "failed"
    assert event["unmapped"]["reason"] == "token_malformed"
    assert event["status_code"] == "token_grant_failed"


def test_an_injection_is_named_in_the_allowed_event() -> None:
    event = http_activity(_facts(), allowed=True, binding_id="alpha:token@h:443/**")
    assert event["unmapped"]["injection"] == "injected"
    assert event["unmapped"]["binding"] == "alpha:token@h:443/**"
    assert "token for alpha:token" in event["message"]


def test_urls_carry_the_real_scheme_and_hide_default_ports() -> None:
    assert http_activity(_facts(), allowed=True)["http_request"]["url"]["url_string"] == (
        "https://alpha.example/v1/x"
    )
    plain = http_activity(_facts(scheme="http", port=8080), allowed=True)
    assert plain["http_request"]["url"]["scheme"] == "http"
    assert plain["http_request"]["url"]["url_string"] == "http://alpha.example:8080/v1/x"


def test_credentials_and_the_bindings_header_are_redacted_and_audit_is_visible() -> None:
    facts = _facts("POST").hiding("x-api-token")
    event = http_activity(facts, allowed=True, audit_denial="no rule allows POST")
    text = json.dumps(event)
    assert "agent-secret" not in text and "agent-copy" not in text
    assert event["http_request"]["http_headers"] == [
        {"name": "Authorization", "value": "[REDACTED]"},
        {"name": "X-Api-Token", "value": "[REDACTED]"},
    ]
    assert event["unmapped"]["would_deny"] == "no rule allows POST"
    assert event["severity_id"] == 2


def test_facts_never_show_header_values_in_their_repr() -> None:
    assert "agent-secret" not in repr(_facts())
