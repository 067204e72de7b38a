"""OCSF events the proxy emits: one HTTP Activity event per request (or CONNECT).

A pure builder: plain facts in, a JSON-ready dict out. It never takes a token: the only
header list it accepts went through :func:`grantbox.proxy.rewrite.redact` first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from .rewrite import redact

OCSF_VERSION = "1.3.0"
HTTP_ACTIVITY = 4002
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

ACTION_ALLOWED, ACTION_DENIED = 1, 2
DISPOSITION_ALLOWED, DISPOSITION_BLOCKED = 1, 2
SEVERITY_INFO, SEVERITY_LOW, SEVERITY_MEDIUM = 1, 2, 3
STATUS_SUCCESS, STATUS_FAILURE = 1, 2

_PRODUCT = {"name": "grantbox", "vendor_name": "grantbox", "feature": {"name": "egress-proxy"}}


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What an HTTP Activity event says about one request.

    ``fields`` are the agent's header lines as received; events show them redacted
    (credential-like headers, and the ``hidden`` names: the binding's header in whatever
    form the agent sent it). Redaction happens when the event is built, off the hot path.
    """

    method: str
    scheme: str
    host: str
    port: int
    path: str
    sandbox_id: str = ""
    fields: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)
    client: str = ""
    dst_ip: str = ""
    hidden: tuple[str, ...] = ()

    def hiding(self, name: str) -> RequestFacts:
        return replace(self, hidden=(*self.hidden, name))

    @property
    def headers(self) -> list[list[str]]:
        return redact(self.fields, extra=self.hidden)

    @property
    def url(self) -> str:
        default = (self.scheme == "https" and self.port == 443) or (
            self.scheme == "http" and self.port == 80
        )
        authority = self.host if default else f"{self.host}:{self.port}"
        if ":" in self.host and not self.host.startswith("["):
            authority = f"[{self.host}]" if default else f"[{self.host}]:{self.port}"
        return f"{self.scheme}://{authority}{self.path}"


def http_activity(
    facts: RequestFacts,
    *,
    allowed: bool,
    code: str | None = None,
    detail: str = "",
    entry: str | None = None,
    audit_denial: str | None = None,
    binding_id: str | None = None,
    reason: str | None = None,
    dst_ip: str = "",
    when: float | None = None,
    binding_ids: tuple[str, ...] = (),
    credentials: tuple[str, ...] = (),
    websocket: bool = False,
) -> dict[str, Any]:
    """The one event of one request (or CONNECT): its decision and, where bindings
    applied, whether their tokens were injected or why not (never a token); and which
    stored credentials went in place of their placeholders (never a value)."""
    injected = allowed and binding_id is not None
    ids = binding_ids or ((binding_id,) if binding_id is not None else ())
    method, host, port = facts.method, facts.host, facts.port
    url = facts.url
    if allowed and audit_denial:
        message = f"audit: would deny {method} {url}: {audit_denial}"
    elif injected:
        tokens = "tokens" if len(ids) > 1 else "a token"
        message = f"allowed {method} {url} with {tokens} for {', '.join(ids)}"
    elif allowed:
        message = f"allowed {method} {url}"
    elif reason:
        message = f"token grant failed for {binding_id} on {method} {url}: {reason}"
    else:
        message = f"denied {method} {url}: {code}"
    # Built in one literal, in the order the keys have always had (one event per request:
    # this is on every request's account).
    activity = HTTP_METHOD_ACTIVITY.get(method.upper(), ACTIVITY_OTHER)
    request: dict[str, Any] = {
        "http_method": method,
        "url": {
            "scheme": facts.scheme,
            "hostname": host,
            "port": port,
            "path": facts.path,
            "url_string": url,
        },
    }
    if facts.fields:
        request["http_headers"] = [{"name": n, "value": v} for n, v in facts.headers]
    destination: dict[str, Any] = {"hostname": host, "port": port}
    if dst_ip or facts.dst_ip:
        destination["ip"] = dst_ip or facts.dst_ip
    event: dict[str, Any] = {
        "class_uid": HTTP_ACTIVITY,
        "category_uid": NETWORK_CATEGORY,
        "activity_id": activity,
        "type_uid": HTTP_ACTIVITY * 100 + activity,
        "time": int((time.time() if when is None else when) * 1000),
        "message": message,
        "metadata": {"version": OCSF_VERSION, "product": _PRODUCT},
        "action_id": ACTION_ALLOWED if allowed else ACTION_DENIED,
        "disposition_id": DISPOSITION_ALLOWED if allowed else DISPOSITION_BLOCKED,
        "severity_id": SEVERITY_LOW
        if audit_denial
        else (SEVERITY_INFO if allowed else SEVERITY_MEDIUM),
        "status_id": STATUS_SUCCESS if allowed else STATUS_FAILURE,
        "http_request": request,
        "dst_endpoint": destination,
    }
    if facts.client:
        event["src_endpoint"] = {"name": facts.client}
    extra: dict[str, Any] = {}
    if facts.sandbox_id:
        extra["sandbox_id"] = facts.sandbox_id
    event["unmapped"] = extra
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
    if binding_id is not None:
        extra["binding"] = binding_id
        if len(ids) > 1:
            extra["bindings"] = list(ids)
        if injected:
            extra["injection"] = "injected"
        elif reason:
            extra["injection"] = "failed"
            extra["reason"] = reason
    if credentials:
        extra["credentials"] = list(credentials)
    if websocket:
        extra["upgrade"] = "websocket"  # the opening handshake; frames follow unread
    if not extra:
        del event["unmapped"]
    return event
