"""Token grants: a binding's JWT-SVID exchanged for an OAuth access token, and cached.

``GrantEngine.obtain(binding)`` is the whole interface the proxy needs; every failure is a
:class:`GrantError` whose ``reason`` is one of DESIGN §3.4.
"""

from .answer import MAX_BODY_BYTES, TokenAnswer, is_token68, sanitise_oauth_field
from .cache import AccessToken
from .client import TokenEndpointClient
from .engine import GrantEngine
from .errors import (
    REASONS,
    GrantError,
    GrantMisconfigured,
    TokenEndpointError,
    TokenEndpointRejected,
    TokenEndpointTimeout,
    TokenEndpointUnreachable,
    TokenMalformed,
    WorkloadIdentityDenied,
    WorkloadIdentityUnavailable,
)
from .lifetime import backoff_delay, cache_ttl, refresh_after
from .request import CacheKey, cache_key, token_request_form
from .svid import Svid, SvidSource

__all__ = [
    "MAX_BODY_BYTES",
    "REASONS",
    "AccessToken",
    "CacheKey",
    "GrantEngine",
    "GrantError",
    "GrantMisconfigured",
    "Svid",
    "SvidSource",
    "TokenAnswer",
    "TokenEndpointClient",
    "TokenEndpointError",
    "TokenEndpointRejected",
    "TokenEndpointTimeout",
    "TokenEndpointUnreachable",
    "TokenMalformed",
    "WorkloadIdentityDenied",
    "WorkloadIdentityUnavailable",
    "backoff_delay",
    "cache_key",
    "cache_ttl",
    "is_token68",
    "refresh_after",
    "sanitise_oauth_field",
    "token_request_form",
]
