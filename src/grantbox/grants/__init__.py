"""Token grants: a binding's JWT-SVID exchanged for an OAuth access token, and cached.

``GrantEngine.obtain(binding)`` is the whole interface the proxy needs; every failure is a
:class:`GrantError` whose ``reason`` is a :class:`GrantFailure` (DESIGN §3.4).
"""

from .answer import MAX_BODY_BYTES, TokenAnswer, is_token68, sanitise_oauth_field
from .cache import AccessToken
from .client import TokenEndpointClient
from .engine import GrantEngine
from .errors import (
    REASONS,
    GrantError,
    GrantFailure,
    GrantMisconfigured,
    TokenEndpointError,
    TokenEndpointRejected,
    TokenEndpointTimeout,
    TokenEndpointUnreachable,
    TokenMalformed,
    WorkloadIdentityDenied,
    WorkloadIdentityUnavailable,
    error_for_reason,
    failure_of,
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
    "GrantFailure",
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
    "error_for_reason",
    "failure_of",
    "is_token68",
    "refresh_after",
    "sanitise_oauth_field",
    "token_request_form",
]
