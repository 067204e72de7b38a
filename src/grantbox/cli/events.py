"""One line per proxy decision, read from the OCSF event the supervisor shipped.

``TIME  DECISION  METHOD URL  rule=… binding=… reason=…``: what an operator scans for when
a request was refused or got no token. Pure; the caller neutralises the line before it
reaches a terminal (URLs and details are the agent's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

HTTP_ACTIVITY = 4002
NETWORK_ACTIVITY = 4001
_NETWORK_ACTIVITIES = {1: "open", 2: "close", 4: "fail", 5: "refuse"}


def _get(data: Mapping[str, Any], *path: str) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def decision(data: Mapping[str, Any]) -> str:
    """``allow``, ``deny``, ``audit`` (allowed, would have been denied), ``token`` (a token
    was injected), ``no-token`` (the grant failed), or a connection's ``open``/``close``/…"""
    injection = _get(data, "unmapped", "injection")
    if injection == "injected":
        return "token"
    if injection == "failed":
        return "no-token"
    if data.get("class_uid") == NETWORK_ACTIVITY:
        return _NETWORK_ACTIVITIES.get(data.get("activity_id", 0), "network")
    if data.get("action_id") == 2:
        return "deny"
    if data.get("action_id") == 1:
        return "audit" if _get(data, "unmapped", "enforcement") == "audit" else "allow"
    return str(data.get("kind") or "event")


def _target(data: Mapping[str, Any]) -> str:
    url = _get(data, "http_request", "url", "url_string")
    if url:
        return str(url)
    host, port = _get(data, "dst_endpoint", "hostname"), _get(data, "dst_endpoint", "port")
    if host:
        return f"{host}:{port}" if port else str(host)
    return ""


def _reason(data: Mapping[str, Any]) -> str:
    parts = []
    for value in (
        _get(data, "unmapped", "reason") or data.get("status_code"),
        _get(data, "unmapped", "would_deny"),
        data.get("status_detail"),
    ):
        if value and str(value) not in parts:
            parts.append(str(value))
    return ": ".join(parts)


def is_connection_churn(record: Mapping[str, Any]) -> bool:
    """A connection opened or closed: not a decision (shown only in ``-o json``)."""
    data = record.get("data")
    return (
        isinstance(data, Mapping)
        and data.get("class_uid") == NETWORK_ACTIVITY
        and data.get("activity_id") in (1, 2)
    )


def event_line(record: Mapping[str, Any]) -> str:
    """The human line for one stored event (``{"time", "kind", "data"}``)."""
    data = record.get("data")
    if not isinstance(data, Mapping):
        data = {}
    words = [str(record.get("time", "")), f"{decision(data):<8}"]
    method = _get(data, "http_request", "http_method")
    target = _target(data)
    if method or target:
        words.append(" ".join(str(part) for part in (method, target) if part))
    elif data.get("message"):
        words.append(str(data["message"]))
    else:
        words.append(json.dumps(data, sort_keys=True, ensure_ascii=True))
    rule = _get(data, "firewall_rule", "name")
    binding = _get(data, "unmapped", "binding")
    if rule:
        words.append(f"rule={rule}")
    if binding:
        words.append(f"binding={binding}")
    reason = _reason(data)
    if reason:
        words.append(f"reason={reason}")
    return "  ".join(words)
