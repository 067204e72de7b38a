"""One line per proxy decision, built from the events the proxy really emits."""

from __future__ import annotations

from typing import Any

from grantbox.cli.events import event_line, is_connection_churn
from grantbox.proxy.events import RequestFacts, http_activity

FACTS = RequestFacts("GET", "http", "alpha.localhost", 18081, "/hello", sandbox_id="s1")
TIME = "2027-01-15T08:00:00.000Z"


def _record(data: dict[str, Any]) -> dict[str, Any]:
    return {"seq": 1, "time": TIME, "kind": "event", "data": data}


def test_a_denial_says_what_and_why() -> None:
    event = http_activity(FACTS, allowed=False, code="policy_denied", detail="no endpoint")
    line = event_line(_record(event))
    assert line.startswith(f"{TIME}  deny")
    assert "GET http://alpha.localhost:18081/hello" in line
    assert line.endswith("reason=policy_denied: no endpoint")


def test_an_allowed_request_names_its_rule() -> None:
    event = http_activity(FACTS, allowed=True, entry="demo/alpha")
    line = event_line(_record(event))
    assert "  allow " in line and line.endswith("rule=demo/alpha")


def test_audit_is_not_shown_as_a_plain_allow() -> None:
    event = http_activity(FACTS, allowed=True, audit_denial="method not allowed")
    line = event_line(_record(event))
    assert "  audit " in line and "reason=method not allowed" in line


def test_injection_outcomes_name_the_rule_and_the_binding() -> None:
    injected = http_activity(
        FACTS, allowed=True, entry="demo/alpha", binding_id="demo:access_token#0"
    )
    failed = http_activity(
        FACTS,
        allowed=False,
        code="token_grant_failed",
        binding_id="demo:access_token#0",
        reason="token_endpoint_unreachable",
        detail="connection refused",
    )
    ok_line, failed_line = event_line(_record(injected)), event_line(_record(failed))
    assert "  token " in ok_line
    assert ok_line.endswith("rule=demo/alpha  binding=demo:access_token#0")
    assert "  no-token " in failed_line
    assert failed_line.endswith("reason=token_endpoint_unreachable: connection refused")


def _connection(activity_id: int, allowed: bool) -> dict[str, Any]:
    """A Network Activity event, as supervisors before one-event-per-request shipped."""
    return {
        "class_uid": 4001,
        "activity_id": activity_id,
        "action_id": 1 if allowed else 2,
        "message": "agent connected",
        "dst_endpoint": {"hostname": "evil.example", "port": 25},
    }


def test_connections_open_and_close_are_churn_but_refusals_are_not() -> None:
    assert is_connection_churn(_record(_connection(1, True)))
    assert is_connection_churn(_record(_connection(2, True)))
    refused = _record(_connection(5, False))
    assert not is_connection_churn(refused)
    assert "  refuse    evil.example:25" in event_line(refused)
    assert not is_connection_churn(_record(http_activity(FACTS, allowed=True)))


def test_anything_else_still_gets_one_line() -> None:
    line = event_line({"time": TIME, "kind": "policy_denied", "data": {"host": "evil.example"}})
    assert line == f'{TIME}  event     {{"host": "evil.example"}}'
    assert event_line({"time": TIME, "data": "not a mapping"}).startswith(TIME)
