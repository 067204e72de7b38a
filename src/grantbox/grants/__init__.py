"""Token grants: a binding's workload identity turned into an OAuth access token, and cached.

``client_credentials`` (JWT-SVID client assertion or X.509-SVID mutual TLS) or RFC 8693
``token_exchange`` (the JWT-SVID as subject token).

``GrantEngine.obtain(binding)`` is the whole interface the proxy needs; every failure is a
:class:`GrantError` whose ``reason`` is a :class:`GrantFailure` (DESIGN §3.4).
"""

from .answer import (
    MAX_BODY_BYTES,
    TokenAnswer,
    check_exchanged_token,
    is_token68,
    parse_retry_after,
    sanitise_oauth_field,
)
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
from .lifetime import Persistence, backoff_delay, cache_ttl, persistence, refresh_after
from .metrics import GrantMetrics
from .request import CacheKey, GrantKind, cache_key, grant_kind, token_request_form
from .svid import Svid, SvidSource, X509SvidSource
from .tls import ClientCertificate, read_ca_file, trust_context

__all__ = [
    "MAX_BODY_BYTES",
    "REASONS",
    "AccessToken",
    "CacheKey",
    "ClientCertificate",
    "GrantEngine",
    "GrantError",
    "GrantFailure",
    "GrantKind",
    "GrantMetrics",
    "GrantMisconfigured",
    "Persistence",
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
    "X509SvidSource",
    "backoff_delay",
    "cache_key",
    "cache_ttl",
    "check_exchanged_token",
    "error_for_reason",
    "failure_of",
    "grant_kind",
    "is_token68",
    "parse_retry_after",
    "persistence",
    "read_ca_file",
    "refresh_after",
    "sanitise_oauth_field",
    "token_request_form",
    "trust_context",
]
