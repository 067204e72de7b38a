"""OCSF events the proxy emits: HTTP Activity per request decision and injection outcome,
Network Activity per connection.

Pure builders: plain facts in, a JSON-ready dict out. They never take a token: the only
header list they accept goes through :func:`grantbox.proxy.rewrite.redact` first.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OCSF_VERSION = "1.3.0"
HTTP_ACTIVITY = 4002
NETWORK_ACTIVITY = 4001
NETWORK_CATEGORY = 4

# HTTP Activity activity_id: one per method, per the OCSF schema (never "Fail=4", which is
# HEAD there).
HTTP_METHOD_ACTIVITY: dict[str, int] = {
    "CONNECT": 1,
    "DELETE": 2,
    "GET": 3,
    "HEAD": 4,
    "OPTIONS": 5,
    "POST": 6,
    "PUT": 7,
    "TRACE": 8,
    "PATCH": 9,
}
ACTIVITY_OTHER = 99

# Network Activity activity_id.
NET_OPEN = 1
NET_CLOSE = 2
NET_FAIL = 4
NET_REFUSE = 5

ACTION_ALLOWED, ACTION_DENIED = 1, 2
DISPOSITION_ALLOWED, DISPOSITION_BLOCKED = 1, 2
SEVERITY_INFO, SEVERITY_LOW, SEVERITY_MEDIUM = 1, 2, 3
STATUS_SUCCESS, STATUS_FAILURE = 1, 2

_PRODUCT = {"name": "grantbox", "vendor_name": "grantbox", "feature": {"name": "egress-proxy"}}


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What an HTTP Activity event says about one request."""

    method: str
    scheme: str
    host: str
    port: int
    path: str
    sandbox_id: str = ""
    headers: list[list[str]] = field(default_factory=list)  # already redacted
    client: str = ""
    dst_ip: str = ""

    @property
    def url(self) -> str:
        default = (self.scheme == "https" and self.port == 443) or (
            self.scheme == "http" and self.port == 80
        )
        authority = self.host if default else f"{self.host}:{self.port}"
        if ":" in self.host and not self.host.startswith("["):
            authority = f"[{self.host}]" if default else f"[{self.host}]:{self.port}"
        return f"{self.scheme}://{authority}{self.path}"


def _base(class_uid: int, activity_id: int, message: str) -> dict[str, Any]:
    return {
        "class_uid": class_uid,
        "category_uid": NETWORK_CATEGORY,
        "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id,
        "time": int(time.time() * 1000),
        "message": message,
        "metadata": {"version": OCSF_VERSION, "product": _PRODUCT},
    }


def _outcome(allowed: bool, severity: int | None = None) -> dict[str, Any]:
    return {
        "action_id": ACTION_ALLOWED if allowed else ACTION_DENIED,
        "disposition_id": DISPOSITION_ALLOWED if allowed else DISPOSITION_BLOCKED,
        "severity_id": severity or (SEVERITY_INFO if allowed else SEVERITY_MEDIUM),
        "status_id": STATUS_SUCCESS if allowed else STATUS_FAILURE,
    }


def _http(facts: RequestFacts) -> dict[str, Any]:
    request: dict[str, Any] = {
        "http_method": facts.method,
        "url": {
            "scheme": facts.scheme,
            "hostname": facts.host,
            "port": facts.port,
            "path": facts.path,
            "url_string": facts.url,
        },
    }
    if facts.headers:
        request["http_headers"] = [{"name": n, "value": v} for n, v in facts.headers]
    out: dict[str, Any] = {
        "http_request": request,
        "dst_endpoint": {"hostname": facts.host, "port": facts.port},
    }
    if facts.dst_ip:
        out["dst_endpoint"]["ip"] = facts.dst_ip
    if facts.client:
        out["src_endpoint"] = {"name": facts.client}
    if facts.sandbox_id:
        out["unmapped"] = {"sandbox_id": facts.sandbox_id}
    return out


def _activity(method: str) -> int:
    return HTTP_METHOD_ACTIVITY.get(method.upper(), ACTIVITY_OTHER)


def http_decision(
    facts: RequestFacts,
    *,
    allowed: bool,
    code: str | None = None,
    detail: str = "",
    entry: str | None = None,
    audit_denial: str | None = None,
) -> dict[str, Any]:
    """The policy decision for one request (or CONNECT)."""
    if allowed and audit_denial:
        message = f"audit: would deny {facts.method} {facts.url}: {audit_denial}"
    elif allowed:
        message = f"allowed {facts.method} {facts.url}"
    else:
        message = f"denied {facts.method} {facts.url}: {code}"
    event = _base(HTTP_ACTIVITY, _activity(facts.method), message)
    severity = SEVERITY_LOW if audit_denial else None
    event.update(_outcome(allowed, severity))
    event.update(_http(facts))
    extra = event.setdefault("unmapped", {})
    if entry:
        event["firewall_rule"] = {"name": entry, "type": "network_policy"}
    if code:
        event["status_code"] = code
        extra["error"] = code
    if detail:
        event["status_detail"] = detail
    if audit_denial:
        extra["enforcement"] = "audit"
        extra["would_deny"] = audit_denial
    if not extra:
        event.pop("unmapped")
    return event


def http_injection(
    facts: RequestFacts,
    *,
    binding_id: str,
    ok: bool,
    reason: str | None = None,
    detail: str = "",
) -> dict[str, Any]:
    """The outcome of obtaining and placing a token for one request (never the token)."""
    if ok:
        message = f"token injected for {binding_id} into {facts.method} {facts.url}"
    else:
        message = f"token grant failed for {binding_id} on {facts.method} {facts.url}: {reason}"
    event = _base(HTTP_ACTIVITY, _activity(facts.method), message)
    event.update(_outcome(ok))
    event.update(_http(facts))
    extra = event.setdefault("unmapped", {})
    extra["binding"] = binding_id
    extra["injection"] = "injected" if ok else "failed"
    if reason:
        extra["reason"] = reason
        event["status_code"] = "token_grant_failed"
    if detail:
        event["status_detail"] = detail
    return event


def network_activity(
    activity_id: int,
    *,
    host: str,
    port: int,
    message: str,
    allowed: bool = True,
    dst_ip: str = "",
    client: str = "",
    traffic: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A connection opened, closed, refused or failed."""
    event = _base(NETWORK_ACTIVITY, activity_id, message)
    event.update(_outcome(allowed))
    dst: dict[str, Any] = {"hostname": host, "port": port}
    if dst_ip:
        dst["ip"] = dst_ip
    event["dst_endpoint"] = dst
    if client:
        event["src_endpoint"] = {"name": client}
    if traffic:
        event["traffic"] = dict(traffic)
    return event
