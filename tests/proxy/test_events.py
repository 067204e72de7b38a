"""OCSF events: right classes and activity ids, real schemes, nothing secret."""

from __future__ import annotations

import json

import pytest

from grantbox.proxy.events import (
    HTTP_ACTIVITY,
    NET_OPEN,
    NETWORK_ACTIVITY,
    RequestFacts,
    http_decision,
    http_injection,
    network_activity,
)
from grantbox.proxy.rewrite import redact


def _facts(method: str = "GET", scheme: str = "https", port: int = 443) -> RequestFacts:
    return RequestFacts(
        method=method,
        scheme=scheme,
        host="alpha.example",
        port=port,
        path="/v1/x",
        headers=redact([(b"Authorization", b"Bearer agent-secret")]),
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
        http_decision(_facts(method), allowed=True),
        http_decision(_facts(method), allowed=False, code="policy_denied"),
        http_injection(_facts(method), binding_id="b", ok=False, reason="token_endpoint_timeout"),
    ):
        assert event["class_uid"] == HTTP_ACTIVITY
        assert event["activity_id"] == activity
        assert event["type_uid"] == HTTP_ACTIVITY * 100 + activity


def test_failed_injection_on_get_is_not_reported_as_head() -> None:
    event = http_injection(_facts("GET"), binding_id="b", ok=False, reason="token_malformed")
    assert event["activity_id"] == 3
    assert (event["action_id"], event["disposition_id"], event["status_id"]) == (2, 2, 2)
    assert event["unmapped"]["reason"] == "token_malformed"


def test_urls_carry_the_real_scheme_and_hide_default_ports() -> None:
    assert http_decision(_facts(), allowed=True)["http_request"]["url"]["url_string"] == (
        "https://alpha.example/v1/x"
    )
    plain = http_decision(_facts(scheme="http", port=8080), allowed=True)
    assert plain["http_request"]["url"]["scheme"] == "http"
    assert plain["http_request"]["url"]["url_string"] == "http://alpha.example:8080/v1/x"


def test_authorization_is_redacted_and_audit_is_visible() -> None:
    event = http_decision(_facts("POST"), allowed=True, audit_denial="no rule allows POST")
    text = json.dumps(event)
    assert "agent-secret" not in text
    assert event["http_request"]["http_headers"] == [
        {"name": "Authorization", "value": "[REDACTED]"}
    ]
    assert event["unmapped"]["would_deny"] == "no rule allows POST"
    assert event["severity_id"] == 2


def test_network_activity() -> None:
    event = network_activity(NET_OPEN, host="a", port=1, message="m", dst_ip="127.0.0.1")
    assert (event["class_uid"], event["activity_id"], event["type_uid"]) == (
        NETWORK_ACTIVITY,
        1,
        400101,
    )
    assert event["dst_endpoint"] == {"hostname": "a", "port": 1, "ip": "127.0.0.1"}
