"""The egress proxy: the only door out of a sandbox.

Adapters (CONNECT, absolute-form ``http://``) feed each request to one sans-IO flow
(:func:`request_flow`) over the compiled policy (:func:`compile_policy`); the flow yields
commands (resolve, identify the program, obtain a token, dial) and ends in one outcome -
forward or refuse - which :class:`Recorder` turns into one event and one metric update and
the relays carry out. Answers the proxy makes itself, header rewriting and decisions are
pure functions tested byte by byte.
"""

from .answers import ErrorCode, ProxyAnswer, answer_bytes
from .decision import Decision, path_problem
from .destinations import (
    IPAddress,
    Resolver,
    SystemResolver,
    address_problem,
    parse_overrides,
    validate_addresses,
)
from .flow import (
    Arrival,
    BodyRead,
    Dial,
    Dialed,
    Forward,
    Granted,
    Grants,
    IdentifyProgram,
    ObtainTokens,
    Outcome,
    ReadBody,
    Refuse,
    Resolve,
    Resolved,
    request_flow,
    run_flow,
)
from .framing import FramingError, HeadTooLarge, RequestHead, parse_head, serialize_head
from .limits import Limits
from .metrics import ProxyMetrics
from .placeholders import (
    PLACEHOLDER,
    Mismatch,
    PlaceholderTable,
    compile_placeholders,
    new_placeholder,
)
from .policy import UNKNOWN_PROGRAM, CompiledPolicy, Program, authorize, compile_policy
from .pool import ProxyPool
from .programs import ProcPrograms, ProgramResolver
from .record import EventSink, Recorder
from .rewrite import redact, upstream_request_headers
from .server import EgressProxy
from .sink import EventQueue, event_json, json_line
from .standalone import StandaloneConfigError, load_standalone_config, parse_standalone_config
from .tls import InterceptionCA
from .tokens import AccessTokenLike, TokenSource, credential_header

__all__ = [
    "PLACEHOLDER",
    "UNKNOWN_PROGRAM",
    "AccessTokenLike",
    "Arrival",
    "BodyRead",
    "CompiledPolicy",
    "Decision",
    "Dial",
    "Dialed",
    "EgressProxy",
    "ErrorCode",
    "EventQueue",
    "EventSink",
    "Forward",
    "FramingError",
    "Granted",
    "Grants",
    "HeadTooLarge",
    "IPAddress",
    "IdentifyProgram",
    "InterceptionCA",
    "Limits",
    "Mismatch",
    "ObtainTokens",
    "Outcome",
    "PlaceholderTable",
    "ProcPrograms",
    "Program",
    "ProgramResolver",
    "ProxyAnswer",
    "ProxyMetrics",
    "ProxyPool",
    "ReadBody",
    "Recorder",
    "Refuse",
    "RequestHead",
    "Resolve",
    "Resolved",
    "Resolver",
    "StandaloneConfigError",
    "SystemResolver",
    "TokenSource",
    "address_problem",
    "answer_bytes",
    "authorize",
    "compile_placeholders",
    "compile_policy",
    "credential_header",
    "event_json",
    "json_line",
    "load_standalone_config",
    "new_placeholder",
    "parse_head",
    "parse_overrides",
    "parse_standalone_config",
    "path_problem",
    "redact",
    "request_flow",
    "run_flow",
    "serialize_head",
    "upstream_request_headers",
    "validate_addresses",
]
