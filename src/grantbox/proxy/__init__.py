"""The egress proxy: the only door out of a sandbox.

Adapters (CONNECT, absolute-form ``http://``) feed one authorization step
(:func:`authorize`), whose :class:`Decision` the relays carry out: validated destinations,
TLS interception, per-request HTTP/1.1 relaying and token injection. Answers the proxy
makes itself, header rewriting and decisions are pure functions tested byte by byte.
"""

from .answers import ErrorCode, ProxyAnswer, answer_bytes
from .decision import Decision, authorize, path_problem
from .destinations import (
    IPAddress,
    Resolver,
    SystemResolver,
    address_problem,
    parse_overrides,
    validate_addresses,
)
from .framing import FramingError, HeadTooLarge, RequestHead, parse_head, serialize_head
from .metrics import ProxyMetrics
from .rewrite import redact, upstream_request_headers
from .server import EgressProxy, log_event
from .standalone import StandaloneConfigError, load_standalone_config, parse_standalone_config
from .tls import InterceptionCA
from .tokens import AccessTokenLike, TokenSource, credential_header, grant_failure_reason

__all__ = [
    "AccessTokenLike",
    "Decision",
    "EgressProxy",
    "ErrorCode",
    "FramingError",
    "HeadTooLarge",
    "IPAddress",
    "InterceptionCA",
    "ProxyAnswer",
    "ProxyMetrics",
    "RequestHead",
    "Resolver",
    "StandaloneConfigError",
    "SystemResolver",
    "TokenSource",
    "address_problem",
    "answer_bytes",
    "authorize",
    "credential_header",
    "grant_failure_reason",
    "load_standalone_config",
    "log_event",
    "parse_head",
    "parse_overrides",
    "parse_standalone_config",
    "path_problem",
    "redact",
    "serialize_head",
    "upstream_request_headers",
    "validate_addresses",
]
