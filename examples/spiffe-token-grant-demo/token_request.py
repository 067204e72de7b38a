"""The token endpoint's rules, apart from client authentication: reading the request,
deciding what may be granted, and the claims of the access token issued for it.

Errors follow RFC 6749 §5.2 (plus ``invalid_target`` from RFC 8707 for an audience this
issuer does not serve). Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from spiffe_assertion import JWT_SPIFFE, SpiffeClient

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
GRANT_TYPE = "client_credentials"
ALWAYS_GRANTED = ("profile", "email")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class OAuthError(Exception):
    """An RFC 6749 error answer; ``description`` never contains a credential."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


@dataclass(frozen=True)
class TokenRequest:
    """A syntactically valid client-credentials request, not yet authenticated."""

    assertion: str = field(repr=False)
    audience: str
    scopes: tuple[str, ...]
    client_id: str | None = None


def parse_form(content_type: str | None, body: bytes) -> dict[str, str]:
    """Decode a form body; every parameter at most once (RFC 6749 §3.2)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        raise OAuthError("invalid_request", f"the body must be {FORM_CONTENT_TYPE}")
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the form body is malformed") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise OAuthError("invalid_request", f"parameter {name!r} is repeated")
        fields[name] = value
    return fields


def read_token_request(fields: Mapping[str, str], *, basic_auth: bool) -> TokenRequest:
    """Check grant type and client-authentication parameters; parse audience and scope.

    ``basic_auth`` says whether an ``Authorization`` header came along: a client may use
    only one authentication method (RFC 6749 §2.3).
    """
    grant_type = fields.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "grant_type is required")
    if grant_type != GRANT_TYPE:
        raise OAuthError("unsupported_grant_type", f"only {GRANT_TYPE} is supported")
    if basic_auth or "client_secret" in fields:
        raise OAuthError("invalid_request", "authenticate with a client assertion only")
    assertion_type = fields.get("client_assertion_type")
    if not assertion_type:
        raise invalid_client("client authentication is required")
    if assertion_type != JWT_SPIFFE:
        raise invalid_client(f"client_assertion_type must be {JWT_SPIFFE}")
    assertion = fields.get("client_assertion", "")
    if not assertion:
        raise invalid_client("client_assertion is required")
    audience = fields.get("audience", "")
    if not audience:
        raise OAuthError("invalid_request", "audience is required")
    return TokenRequest(
        assertion=assertion,
        audience=audience,
        scopes=parse_scope(fields.get("scope", "")),
        client_id=fields.get("client_id"),
    )


def parse_scope(value: str) -> tuple[str, ...]:
    if not value:
        return ()
    tokens = value.split(" ")
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise OAuthError("invalid_scope", "scope is malformed")
    return tuple(dict.fromkeys(tokens))


def check_client_id(request: TokenRequest, client: SpiffeClient) -> None:
    """The draft lets a client name itself; if it does, it must name its SPIFFE ID."""
    if request.client_id is not None and request.client_id != client.spiffe_id:
        raise invalid_client("client_id does not match the client assertion's SPIFFE ID")


def check_grant(request: TokenRequest, audiences: Collection[str]) -> None:
    """An authenticated client may have a token for a served audience whose scope names it."""
    if request.audience not in audiences:
        raise OAuthError("invalid_target", "this issuer does not serve the requested audience")
    if request.audience not in request.scopes:
        raise OAuthError("invalid_scope", "scope must contain the requested audience")
    if any(scope not in audiences for scope in request.scopes):
        raise OAuthError("invalid_scope", "scope names something this issuer does not grant")


def granted_scope(request: TokenRequest) -> str:
    return " ".join(dict.fromkeys([*request.scopes, *ALWAYS_GRANTED]))


def access_token_claims(
    request: TokenRequest,
    client: SpiffeClient,
    *,
    issuer: str,
    issued_at: int,
    lifetime: int,
    jti: str,
) -> dict[str, Any]:
    """The claims of an access token for an authenticated, checked request."""
    return {
        "iss": issuer,
        "sub": client.spiffe_id,
        "aud": [request.audience, "account"],
        "scope": granted_scope(request),
        "azp": client.spiffe_id,
        "client_id": client.spiffe_id,
        "iat": issued_at,
        "exp": issued_at + lifetime,
        "jti": jti,
    }


def token_response(access_token: str, claims: Mapping[str, Any], lifetime: int) -> dict[str, Any]:
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": claims["scope"],
    }
