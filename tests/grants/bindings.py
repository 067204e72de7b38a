"""Grant bindings for tests, with every field explicit and overridable."""

from __future__ import annotations

from typing import Any

from grantbox.profiles import JWT_SPIFFE, GrantBinding


def make_binding(**overrides: Any) -> GrantBinding:
    values: dict[str, Any] = {
        "provider": "acme",
        "credential": "access_token",
        "profile": "acme-profile",
        "host": "alpha.example",
        "port": 443,
        "path": "",
        "audience": "alpha",
        "scopes": ("alpha", "read"),
        "token_endpoint": "https://issuer.example/realms/grantbox/protocol/openid-connect/token",
        "svid_audience": "https://issuer.example/realms/grantbox",
        "assertion_type": str(JWT_SPIFFE),
        "cache_ttl_seconds": 0,
        "header_name": "Authorization",
        "header_style": "bearer",
    }
    values.update(overrides)
    if isinstance(values["scopes"], list):
        values["scopes"] = tuple(values["scopes"])
    return GrantBinding(**values)
