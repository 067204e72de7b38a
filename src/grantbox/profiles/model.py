"""The provider profile schema (DESIGN §3.1) as strict pydantic models.

Structure lives here: types, enums, required keys, unknown keys refused, numeric ranges.
Rules that need to look across fields or at URLs live in :mod:`.validation` so their
diagnostics read the same way whether they come from a YAML typo or a bad token endpoint.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 (a URN)
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 (a URN)

Port = Annotated[int, Field(ge=1, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
        use_enum_values=False,
        populate_by_name=False,
    )


class AssertionType(StrEnum):
    """How the token endpoint should read the JWT-SVID we present."""

    JWT_BEARER = JWT_BEARER
    JWT_SPIFFE = JWT_SPIFFE


class GrantType(StrEnum):
    """Which OAuth grant turns the workload identity into an access token."""

    CLIENT_CREDENTIALS = "client_credentials"
    TOKEN_EXCHANGE = "token_exchange"  # noqa: S105 (a grant name)


class ClientAuth(StrEnum):
    """How the client authenticates to the token endpoint.

    ``jwt_svid``: a JWT-SVID as ``client_assertion``; ``tls_client_auth`` and
    ``self_signed_tls_client_auth``: the X.509-SVID on a mutual-TLS connection (RFC 8705; the
    two differ only in how the authorization server checks the certificate); ``none``: no
    client authentication (token exchange only: the subject token is the credential).
    """

    JWT_SVID = "jwt_svid"
    TLS_CLIENT_AUTH = "tls_client_auth"
    SELF_SIGNED_TLS_CLIENT_AUTH = "self_signed_tls_client_auth"
    NONE = "none"

    @property
    def is_mutual_tls(self) -> bool:
        return self in (ClientAuth.TLS_CLIENT_AUTH, ClientAuth.SELF_SIGNED_TLS_CLIENT_AUTH)


class TokenType(StrEnum):
    """Token types (RFC 8693 §3) that a proxy can present as a bearer credential."""

    ACCESS_TOKEN = ACCESS_TOKEN_TYPE
    JWT = JWT_TOKEN_TYPE


def default_client_auth(grant_type: GrantType) -> ClientAuth:
    """``client_credentials`` authenticates with a JWT-SVID; a token exchange presents the
    JWT-SVID as its subject token and, by default, nothing else."""
    if grant_type is GrantType.TOKEN_EXCHANGE:
        return ClientAuth.NONE
    return ClientAuth.JWT_SVID


class AuthStyle(StrEnum):
    """Where a credential goes on the request."""

    BEARER = "bearer"
    HEADER = "header"
    BASIC = "basic"
    QUERY = "query"


class TlsMode(StrEnum):
    AUTO = "auto"
    SKIP = "skip"


class Enforcement(StrEnum):
    ENFORCE = "enforce"
    AUDIT = "audit"


class Protocol(StrEnum):
    REST = "rest"


class Access(StrEnum):
    READ_ONLY = "read-only"
    READ_WRITE = "read-write"
    FULL = "full"


class AudienceOverride(_Strict):
    """Endpoint-specific audience/scopes. Selectors narrow the endpoint, never widen it."""

    host: str = ""
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    path: str = ""
    audience: str = ""
    scopes: tuple[str, ...] = ()
    resource: tuple[str, ...] = Field(
        default=(),
        description="Replaces the grant's resource indicators for requests this override selects.",
    )


class TokenGrant(_Strict):
    """Obtain the credential at run time from the workload identity.

    ``client_credentials`` (default): the client authenticates (JWT-SVID assertion or
    X.509-SVID over mutual TLS) and receives a token. ``token_exchange`` (RFC 8693): the
    JWT-SVID is the ``subject_token`` exchanged for a token for ``audience``/``resource``.
    """

    token_endpoint: str
    grant_type: GrantType = GrantType.CLIENT_CREDENTIALS
    client_auth: ClientAuth | None = Field(
        default=None,
        description=(
            "How the client authenticates; unset means jwt_svid for client_credentials and "
            "none for token_exchange."
        ),
    )
    client_id: str = Field(
        default="",
        description=(
            "Sent as client_id when set; with mutual-TLS client auth an empty value sends "
            "the X.509-SVID's SPIFFE ID."
        ),
    )
    audience: str = ""
    resource: tuple[str, ...] = Field(
        default=(),
        description="RFC 8707 resource indicators: absolute http(s) URLs without a fragment.",
    )
    jwt_svid_audience: str = ""
    client_assertion_type: AssertionType = AssertionType.JWT_BEARER
    requested_token_type: TokenType | None = Field(
        default=None,
        description="token_exchange only: the token type to ask for (access_token or jwt).",
    )
    scopes: tuple[str, ...] = ()
    cache_ttl_seconds: Annotated[int, Field(ge=0)] = 0
    token_endpoint_ca: str = Field(
        default="",
        description=(
            "PEM certificates that alone are trusted for an https token_endpoint (a private "
            "CA); empty trusts the system roots and the supervisor's --upstream-ca."
        ),
    )
    audience_overrides: tuple[AudienceOverride, ...] = ()

    @property
    def effective_client_auth(self) -> ClientAuth:
        return self.client_auth or default_client_auth(self.grant_type)

    @property
    def sends_jwt_svid(self) -> bool:
        """Whether a JWT-SVID goes to the token endpoint (as subject token or assertion)."""
        return (
            self.grant_type is GrantType.TOKEN_EXCHANGE
            or self.effective_client_auth is ClientAuth.JWT_SVID
        )


class Credential(_Strict):
    name: str
    description: str = ""
    required: bool = False
    auth_style: AuthStyle | None = Field(
        default=None,
        description=(
            "Where the proxy places the credential. Token grants: bearer (the default) or "
            "header. Stored (static) credentials: unset places nothing (the agent uses the "
            "placeholder from env_var); bearer, header, basic or query add it to every "
            "request to the profile's endpoints that does not carry it already."
        ),
    )
    header_name: str = ""
    query_param: str = ""
    env_var: str = Field(
        default="",
        description=(
            "Stored credentials only: the agent's environment variable holding the "
            "credential's placeholder (never the value). Empty: the name upper-cased, with "
            "'-' and '.' as '_'."
        ),
    )
    token_grant: TokenGrant | None = None

    @property
    def is_runtime_resolvable(self) -> bool:
        """True when the credential is obtained at run time, so no secret is stored."""
        return self.token_grant is not None

    @property
    def is_static(self) -> bool:
        """A stored secret, sent by the proxy in place of its placeholder."""
        return self.token_grant is None

    @property
    def placeholder_variable(self) -> str:
        """The environment variable that holds this credential's placeholder."""
        return self.env_var or self.name.upper().replace("-", "_").replace(".", "_")


class Rule(_Strict):
    """An L7 allow rule: an HTTP method (or ``*``) and a path pattern."""

    method: str = "*"
    path: str = "/**"

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class Endpoint(_Strict):
    host: str
    port: Port | None = None
    ports: tuple[Port, ...] = ()
    path: str = ""
    protocol: Protocol | None = None
    tls: TlsMode = TlsMode.AUTO
    enforcement: Enforcement = Enforcement.ENFORCE
    access: Access | None = None
    rules: tuple[Rule, ...] = ()
    allowed_ips: tuple[str, ...] = ()
    credential_body_rewrite: bool = Field(
        default=False,
        description=(
            "Provider profiles only: the proxy also replaces stored-credential placeholders "
            "in request bodies to this endpoint (bounded size; elsewhere a placeholder in a "
            "body is refused)."
        ),
    )

    @field_validator("host")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @property
    def all_ports(self) -> tuple[int, ...]:
        """Every port the endpoint names, in order, without repeats."""
        seen: dict[int, None] = {}
        for port in (*((self.port,) if self.port else ()), *self.ports):
            seen.setdefault(port, None)
        return tuple(seen)


class Profile(_Strict):
    """A provider profile: which credentials a provider has and where they may be sent."""

    id: str
    display_name: str = ""
    description: str = ""
    category: str = "other"
    credentials: tuple[Credential, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    binaries: tuple[str, ...] = ()
    # Set by the gateway on export so that an update can prove it saw the latest version.
    # Not part of the content: it never changes the hash.
    resource_version: int | None = None

    @property
    def allows_runtime_credentials(self) -> bool:
        """A provider of this profile may be created with no stored secret: every required
        credential is obtained at run time. A profile with no credentials at all (a
        network-only provider: endpoints and policy, nothing to inject) qualifies too."""
        if not self.credentials:
            return True
        if not any(c.is_runtime_resolvable for c in self.credentials):
            return False
        return all(c.is_runtime_resolvable for c in self.credentials if c.required)

    @property
    def grant_credentials(self) -> tuple[tuple[int, Credential], ...]:
        return tuple((i, c) for i, c in enumerate(self.credentials) if c.token_grant)

    @property
    def static_credentials(self) -> tuple[tuple[int, Credential], ...]:
        return tuple((i, c) for i, c in enumerate(self.credentials) if c.is_static)


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema of a profile document, as published by ``grantbox profile schema``."""
    schema = Profile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "grantbox provider profile"
    return schema
