"""The token request a binding makes, and the cache key that identifies its answer.

Two grants, three ways for the client to authenticate:

==================  =====================================================================
grant               form fields
==================  =====================================================================
client_credentials  ``grant_type=client_credentials``
token_exchange      ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``,
                    ``subject_token=<JWT-SVID>``, ``subject_token_type=…:token-type:jwt``,
                    ``requested_token_type`` when configured (RFC 8693 §2.1)
==================  =====================================================================

then ``client_id`` when configured (with mutual TLS: the X.509-SVID's SPIFFE ID unless
configured, as RFC 8705 §2 requires a client_id), ``client_assertion_type`` and
``client_assertion=<JWT-SVID>`` for ``jwt_svid`` client auth (none for mutual TLS, where the
certificate authenticates, or ``none``), then ``audience``, one ``resource`` per indicator
(RFC 8707) and ``scope``, each when set.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlencode

from grantbox.profiles import JWT_TOKEN_TYPE, ClientAuth, GrantBinding, GrantType

from .errors import GrantMisconfigured

GRANT_TYPE = "client_credentials"
TOKEN_EXCHANGE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
SUBJECT_TOKEN_TYPE = JWT_TOKEN_TYPE
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class GrantKind(NamedTuple):
    grant_type: GrantType
    client_auth: ClientAuth

    @property
    def needs_jwt_svid(self) -> bool:
        return (
            self.grant_type is GrantType.TOKEN_EXCHANGE or self.client_auth is ClientAuth.JWT_SVID
        )

    @property
    def needs_x509_svid(self) -> bool:
        return self.client_auth.is_mutual_tls


def grant_kind(binding: GrantBinding) -> GrantKind:
    """The binding's grant type and client authentication; a value this version does not
    know (a binding written by a newer gateway, a hand-edited config) fails closed."""
    try:
        grant_type = GrantType(binding.grant_type)
    except ValueError:
        raise GrantMisconfigured(f"unknown grant_type {binding.grant_type!r}") from None
    try:
        client_auth = ClientAuth(binding.client_auth)
    except ValueError:
        raise GrantMisconfigured(f"unknown client_auth {binding.client_auth!r}") from None
    if grant_type is GrantType.CLIENT_CREDENTIALS and client_auth is ClientAuth.NONE:
        raise GrantMisconfigured("client_credentials needs client authentication")
    if binding.requested_token_type and grant_type is not GrantType.TOKEN_EXCHANGE:
        raise GrantMisconfigured("requested_token_type applies only to token_exchange")
    return GrantKind(grant_type, client_auth)


class CacheKey(NamedTuple):
    """Everything that makes two token requests different (DESIGN §3.3).

    Header name/style and ``cache_ttl_seconds`` are not part of it: they change how a token
    is used or kept, not which token the issuer hands out. Neither is the X.509-SVID: it is
    rotated under a cached token without making the token a different one. A tuple, because
    the key is hashed on every lookup and tuples hash in C.
    """

    binding: str
    token_endpoint: str
    svid_audience: str
    assertion_type: str
    audience: str
    scopes: tuple[str, ...]
    grant_type: str = str(GrantType.CLIENT_CREDENTIALS)
    client_auth: str = str(ClientAuth.JWT_SVID)
    client_id: str = ""
    resource: tuple[str, ...] = ()
    requested_token_type: str = ""


def cache_key(binding: GrantBinding) -> CacheKey:
    return CacheKey(
        binding=binding.id,
        token_endpoint=binding.token_endpoint,
        svid_audience=binding.svid_audience,
        assertion_type=binding.assertion_type,
        audience=binding.audience,
        scopes=tuple(sorted(set(binding.scopes))),
        grant_type=binding.grant_type,
        client_auth=binding.client_auth,
        client_id=binding.client_id,
        resource=tuple(sorted(set(binding.resource))),
        requested_token_type=binding.requested_token_type,
    )


def token_request_form(
    binding: GrantBinding, svid: str = "", *, tls_spiffe_id: str = ""
) -> list[tuple[str, str]]:
    """The form fields of the binding's token request, in wire order.

    ``svid`` is the JWT-SVID (required when the grant sends one); ``tls_spiffe_id`` is the
    SPIFFE ID of the X.509-SVID presented on the connection (mutual-TLS client auth).
    """
    kind = grant_kind(binding)
    if kind.needs_jwt_svid and not svid:
        raise GrantMisconfigured("this grant needs a JWT-SVID and none was given")
    if kind.grant_type is GrantType.TOKEN_EXCHANGE:
        form = [
            ("grant_type", TOKEN_EXCHANGE_GRANT_TYPE),
            ("subject_token", svid),
            ("subject_token_type", SUBJECT_TOKEN_TYPE),
        ]
        if binding.requested_token_type:
            form.append(("requested_token_type", binding.requested_token_type))
    else:
        form = [("grant_type", GRANT_TYPE)]
    client_id = binding.client_id
    if not client_id and kind.needs_x509_svid:
        if not tls_spiffe_id:
            raise GrantMisconfigured("mutual-TLS client auth needs the X.509-SVID's SPIFFE ID")
        client_id = tls_spiffe_id
    if client_id:
        form.append(("client_id", client_id))
    if kind.client_auth is ClientAuth.JWT_SVID:
        form.append(("client_assertion_type", binding.assertion_type))
        form.append(("client_assertion", svid))
    if binding.audience:
        form.append(("audience", binding.audience))
    form.extend(("resource", resource) for resource in binding.resource)
    if binding.scopes:
        form.append(("scope", " ".join(binding.scopes)))
    return form


def encode_form(form: list[tuple[str, str]]) -> bytes:
    return urlencode(form).encode("ascii")
