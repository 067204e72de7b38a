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


class TokenGrant(_Strict):
    """Obtain the credential at run time: JWT-SVID → OAuth ``client_credentials``."""

    token_endpoint: str
    audience: str = ""
    jwt_svid_audience: str = ""
    client_assertion_type: AssertionType = AssertionType.JWT_BEARER
    scopes: tuple[str, ...] = ()
    cache_ttl_seconds: Annotated[int, Field(ge=0)] = 0
    audience_overrides: tuple[AudienceOverride, ...] = ()


class Credential(_Strict):
    name: str
    description: str = ""
    required: bool = False
    auth_style: AuthStyle = AuthStyle.BEARER
    header_name: str = ""
    query_param: str = ""
    token_grant: TokenGrant | None = None

    @property
    def is_runtime_resolvable(self) -> bool:
        """True when the credential is obtained at run time, so no secret is stored."""
        return self.token_grant is not None


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


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema of a profile document, as published by ``grantbox profile schema``."""
    schema = Profile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "grantbox provider profile"
    return schema
