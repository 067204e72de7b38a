"""The token request a binding makes, and the cache key that identifies its answer."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlencode

from grantbox.profiles import GrantBinding

GRANT_TYPE = "client_credentials"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class CacheKey(NamedTuple):
    """Everything that makes two token requests different (DESIGN §3.3).

    Header name/style and ``cache_ttl_seconds`` are not part of it: they change how a token
    is used or kept, not which token the issuer hands out. A tuple, because the key is
    hashed on every lookup and tuples hash in C.
    """

    binding: str
    token_endpoint: str
    svid_audience: str
    assertion_type: str
    audience: str
    scopes: tuple[str, ...]


def cache_key(binding: GrantBinding) -> CacheKey:
    return CacheKey(
        binding=binding.id,
        token_endpoint=binding.token_endpoint,
        svid_audience=binding.svid_audience,
        assertion_type=binding.assertion_type,
        audience=binding.audience,
        scopes=tuple(sorted(set(binding.scopes))),
    )


def token_request_form(binding: GrantBinding, assertion: str) -> list[tuple[str, str]]:
    """The form fields of the ``client_credentials`` request, in wire order.

    The client is identified by the SVID alone: no ``client_id``, no secret.
    """
    form = [
        ("grant_type", GRANT_TYPE),
        ("client_assertion_type", binding.assertion_type),
        ("client_assertion", assertion),
    ]
    if binding.audience:
        form.append(("audience", binding.audience))
    if binding.scopes:
        form.append(("scope", " ".join(binding.scopes)))
    return form


def encode_form(form: list[tuple[str, str]]) -> bytes:
    return urlencode(form).encode("ascii")
