"""Authentication dependencies: the operator route set and the supervisor allowlist."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from grantbox.gateway.auth import SupervisorClaims, TokenError
from grantbox.gateway.errors import Forbidden, Unauthenticated

from .state import gateway_of

bearer = HTTPBearer(auto_error=False, description="operator token or supervisor token")

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_operator(request: Request, credentials: Credentials) -> None:
    gateway = gateway_of(request)
    if credentials is None:
        raise Unauthenticated("missing bearer token")
    if gateway.operator_token.matches(credentials.credentials):
        return
    try:
        gateway.issuer.verify(credentials.credentials)
    except TokenError:
        raise Unauthenticated("invalid operator token") from None
    raise Forbidden("supervisor tokens may not call operator routes")


def require_supervisor(request: Request, credentials: Credentials) -> SupervisorClaims:
    """A valid supervisor token; handlers must still compare its sandbox id to the path."""
    gateway = gateway_of(request)
    if credentials is None:
        raise Unauthenticated("missing bearer token")
    try:
        return gateway.issuer.verify(credentials.credentials)
    except TokenError as exc:
        raise Unauthenticated(str(exc)) from None


def own_sandbox(claims: SupervisorClaims, sandbox_id: str) -> None:
    if claims.sandbox_id != sandbox_id:
        raise Forbidden("this supervisor token is bound to another sandbox")


def require_own_sandbox(
    sandbox_id: str, claims: Annotated[SupervisorClaims, Depends(require_supervisor)]
) -> SupervisorClaims:
    """The token must be bound to the sandbox in the path; checked before the body is read."""
    own_sandbox(claims, sandbox_id)
    return claims


Operator = Depends(require_operator)
Supervisor = Annotated[SupervisorClaims, Depends(require_own_sandbox)]
