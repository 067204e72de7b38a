"""Lint rules for the kind of a token grant: grant type, client authentication, resource
indicators, requested token type, client id and the endpoint's own CA.

A field that the chosen kind would not use is an error rather than a silent no-op: an
operator who writes ``requested_token_type`` on a ``client_credentials`` grant believes
something happens that does not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

from .diagnostics import Diagnostic, Severity
from .model import ClientAuth, Credential, GrantType, Profile, TokenGrant
from .token_endpoint import resource_problem
from .trust import ca_pem_problem

MAX_CLIENT_ID_CHARS = 255


def grant_kind_problems(
    profile: Profile, index: int, credential: Credential
) -> Iterator[Diagnostic]:
    """Diagnostics for how one credential's token grant obtains its token."""
    grant = credential.token_grant
    if grant is None:
        return
    base = f"credentials[{index}].token_grant"
    yield from _check_client_auth(profile.id, base, grant)
    yield from _check_resources(profile.id, f"{base}.resource", grant.resource)
    for o_index, override in enumerate(grant.audience_overrides):
        field = f"{base}.audience_overrides[{o_index}].resource"
        yield from _check_resources(profile.id, field, override.resource)
    yield from _check_client_id(profile.id, base, grant)
    yield from _check_endpoint_ca(profile.id, base, grant)


def _check_client_auth(label: str, base: str, grant: TokenGrant) -> Iterator[Diagnostic]:
    auth = grant.effective_client_auth
    explicit = grant.model_fields_set
    if grant.grant_type is GrantType.CLIENT_CREDENTIALS:
        if auth is ClientAuth.NONE:
            yield Diagnostic(
                label,
                f"{base}.client_auth",
                "client_credentials needs client authentication; use jwt_svid, "
                "tls_client_auth or self_signed_tls_client_auth (or grant_type token_exchange)",
            )
        if grant.requested_token_type is not None:
            yield Diagnostic(
                label,
                f"{base}.requested_token_type",
                "requested_token_type applies only to grant_type token_exchange",
            )
    if auth is not ClientAuth.JWT_SVID and "client_assertion_type" in explicit:
        yield Diagnostic(
            label,
            f"{base}.client_assertion_type",
            f"client_assertion_type applies only to client_auth jwt_svid, not '{auth}'",
        )
    if not grant.sends_jwt_svid and grant.jwt_svid_audience:
        yield Diagnostic(
            label,
            f"{base}.jwt_svid_audience",
            f"no JWT-SVID is sent by a client_credentials grant with client_auth '{auth}'; "
            "remove jwt_svid_audience",
        )
    if auth.is_mutual_tls and urlsplit(grant.token_endpoint).scheme.lower() != "https":
        yield Diagnostic(
            label,
            f"{base}.client_auth",
            f"client_auth '{auth}' presents the X.509-SVID over TLS, so token_endpoint must "
            "be https",
        )


def _check_resources(label: str, field: str, resources: Sequence[str]) -> Iterator[Diagnostic]:
    seen: set[str] = set()
    for r_index, value in enumerate(resources):
        problem = resource_problem(value)
        if problem:
            yield Diagnostic(label, f"{field}[{r_index}]", problem)
        elif value in seen:
            yield Diagnostic(
                label,
                f"{field}[{r_index}]",
                f"resource '{value}' is listed twice",
                Severity.WARNING,
            )
        seen.add(value)


def _check_client_id(label: str, base: str, grant: TokenGrant) -> Iterator[Diagnostic]:
    value = grant.client_id
    if not value:
        return
    if any(ch.isspace() for ch in value) or not value.isprintable():
        yield Diagnostic(
            label,
            f"{base}.client_id",
            "client_id must not contain whitespace or control characters",
        )
    elif len(value) > MAX_CLIENT_ID_CHARS:
        yield Diagnostic(
            label, f"{base}.client_id", f"client_id is longer than {MAX_CLIENT_ID_CHARS} characters"
        )


def _check_endpoint_ca(label: str, base: str, grant: TokenGrant) -> Iterator[Diagnostic]:
    if not grant.token_endpoint_ca:
        return
    if urlsplit(grant.token_endpoint).scheme.lower() != "https":
        yield Diagnostic(
            label,
            f"{base}.token_endpoint_ca",
            "token_endpoint_ca applies only to an https token_endpoint",
        )
    problem = ca_pem_problem(grant.token_endpoint_ca)
    if problem:
        yield Diagnostic(label, f"{base}.token_endpoint_ca", problem)
