"""One request's way through the proxy as a sans-IO flow that ends in one outcome.

In the manner of mitmproxy's layers, :func:`request_flow` is a generator: given a request
head and where it arrived (a forward connection or a CONNECT tunnel, cleartext or TLS, from
which peer) it *yields commands* - :class:`Resolve`, :class:`IdentifyProgram`,
:class:`ObtainTokens`, :class:`Dial` - receives each command's result, and *returns* exactly
one outcome: :class:`Forward` (the rewritten head to send, or the tunnel to open) or
:class:`Refuse` (the answer to give). Every refusal - policy, SSRF after resolution, a
loopback name that resolved elsewhere, cleartext, a failed grant, a failed dial - is decided
here, so the whole decision is tested by feeding plain results to a flow
(:func:`run_flow` drives one from a table).

The relay and the tunnel only carry commands out; :mod:`.record` turns the outcome into the
request's one event and one metric update.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Literal

import h11

from grantbox.grants import GrantError, GrantFailure
from grantbox.profiles import GrantBinding, StaticBinding, TlsMode

from .answers import ErrorCode, ProxyAnswer
from .decision import Decision
from .destinations import IPAddress
from .events import RequestFacts
from .framing import FramingError, RequestHead, serialize_head
from .placeholders import (
    Mismatch,
    PlaceholderTable,
    Rewritten,
    Unusable,
    find_in_body,
    placements,
    rewrite_body,
    rewrite_headers,
    rewrite_target,
)
from .policy import CompiledPolicy, Program
from .rewrite import upstream_request_headers
from .targets import RequestTarget, Tunnel, connect_target, request_target
from .tokens import credential_header
from .websocket import handshake_key, upgrade_request_headers

Headers = list[tuple[bytes, bytes]]


# -- commands ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resolve:
    """Resolve ``host`` (the executor may answer with the address of an open upstream
    connection to the same destination; the flow validates whatever it gets)."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class IdentifyProgram:
    """Find the program that opened the agent connection (answered with a Program)."""


@dataclass(frozen=True, slots=True)
class ObtainTokens:
    """Obtain a token for each binding, all at once (answered with :class:`Grants`, in
    the same order): a request whose endpoint binds several grants waits for the slowest
    token endpoint, not for their sum."""

    bindings: tuple[GrantBinding, ...]


@dataclass(frozen=True, slots=True)
class ReadBody:
    """Read the request body from the agent before anything is dialled (answered with a
    :class:`BodyRead`; the executor reads at most its limit, the rest streams later)."""

    server: h11.Connection = field(repr=False)


@dataclass(frozen=True, slots=True)
class Dial:
    """Connect to one of ``addresses`` (all validated); TLS to the upstream when ``tls``."""

    scheme: Literal["http", "https"]
    host: str
    port: int
    addresses: tuple[IPAddress, ...]
    tls: bool


Command = Resolve | IdentifyProgram | ObtainTokens | ReadBody | Dial


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resolved:
    addresses: tuple[IPAddress, ...] = ()
    error: str = ""  # set when the name did not resolve


@dataclass(frozen=True, slots=True)
class Granted:
    token: str = field(default="", repr=False)
    error: GrantError | None = None


@dataclass(frozen=True, slots=True)
class Grants:
    """One :class:`Granted` per binding of an :class:`ObtainTokens`, in its order."""

    each: tuple[Granted, ...]


@dataclass(frozen=True, slots=True)
class BodyRead:
    data: bytes = field(default=b"", repr=False)
    complete: bool = True  # False: ``data`` is the first part, the rest is still to come
    error: str = ""  # set when the agent's body broke off or broke HTTP/1.1 framing


@dataclass(frozen=True, slots=True)
class Dialed:
    address: IPAddress | None = None
    error: str = ""  # set when no address answered


Result = Resolved | Program | Grants | BodyRead | Dialed


# -- the connection a request arrived on, and outcomes ----------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    """Where a request arrived: ``tunnel`` is the CONNECT it is inside (None on a forward
    connection); ``peer`` is the agent's address as events show it."""

    tunnel: Tunnel | None = None
    peer: str = ""


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request on (``method``/``target``/``headers`` rewritten), or - for a
    CONNECT - open the tunnel (``raw`` when it is a ``tls: skip`` byte pipe)."""

    facts: RequestFacts
    decision: Decision
    method: bytes = b""
    target: str = field(default="", repr=False)  # may hold a stored credential's value
    headers: Headers = field(default_factory=list, repr=False)
    address: IPAddress | None = None
    connect: bool = False
    raw: bool = False
    server: h11.Connection | None = field(default=None, repr=False)  # the agent's side
    keep_alive: bool = True  # the agent may send another request on this connection
    # The body already read from the agent (None: stream it); ``body_complete`` False
    # when the rest still follows on ``server``.
    body: bytes | None = field(default=None, repr=False)
    body_complete: bool = True
    credentials: tuple[str, ...] = ()  # stored credentials (provider:credential) sent
    websocket: str | None = None  # an opening handshake: its Sec-WebSocket-Key

    @property
    def injected(self) -> bool:
        return bool(self.decision.bindings) and not self.connect


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the agent with ``answer`` and close the connection."""

    facts: RequestFacts
    answer: ProxyAnswer
    entry: str | None = None
    binding: GrantBinding | None = None  # the grant the refusal is about (a failed one)
    bindings: tuple[GrantBinding, ...] = ()


Outcome = Forward | Refuse
Flow = Generator[Command, Result, Outcome]


def _facts(
    head: RequestHead,
    arrival: Arrival,
    policy: CompiledPolicy,
    target: RequestTarget | None,
    hidden: tuple[str, ...] = (),
) -> RequestFacts:
    tunnel = arrival.tunnel
    if target is not None:
        scheme, host, port, path = target.scheme, target.host, target.port, target.path
    elif tunnel is not None:
        scheme, host, port, path = tunnel.scheme, tunnel.host, tunnel.port, ""
    else:
        scheme, host, port, path = "http", "", 0, ""
    return RequestFacts(
        method=head.method.decode("ascii"),
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        sandbox_id=policy.sandbox_id,
        fields=tuple((f.name, f.value) for f in head.fields),
        client=arrival.peer,
        hidden=hidden,
    )


def refuse_unparsed(
    answer: ProxyAnswer, arrival: Arrival, policy: CompiledPolicy, method: bytes = b""
) -> Refuse:
    """The outcome of a request refused before its head could be parsed (too large, too
    slow, malformed)."""
    tunnel = arrival.tunnel
    facts = RequestFacts(
        method=method.decode("ascii", "replace") or "UNKNOWN",
        scheme=tunnel.scheme if tunnel else "http",
        host=tunnel.host if tunnel else "",
        port=tunnel.port if tunnel else 0,
        path="",
        sandbox_id=policy.sandbox_id,
        client=arrival.peer,
    )
    return Refuse(facts, answer)


def _refuse(
    facts: RequestFacts,
    code: ErrorCode,
    detail: str,
    decision: Decision | None = None,
    *,
    status: int = 0,
    reason: GrantFailure | None = None,
    failed: GrantBinding | None = None,
) -> Refuse:
    entry = decision.entry if decision else None
    bindings = decision.bindings if decision else ()
    binding = failed or (decision.binding if decision else None)
    answer = ProxyAnswer(code, reason=reason, status=status, detail=detail)
    return Refuse(facts, answer, entry=entry, binding=binding, bindings=bindings)


def request_flow(policy: CompiledPolicy, head: RequestHead, arrival: Arrival) -> Flow:
    """The flow of one request (CONNECT included) through ``policy``."""
    if head.method == b"CONNECT":
        return (yield from _connect_flow(policy, head, arrival))
    return (yield from _http_flow(policy, head, arrival))


def _connect_flow(policy: CompiledPolicy, head: RequestHead, arrival: Arrival) -> Flow:
    if arrival.tunnel is not None:
        facts = _facts(head, arrival, policy, None)
        return _refuse(facts, ErrorCode.INVALID_REQUEST, "CONNECT inside a tunnel")
    try:
        host, port = connect_target(head)
    except (FramingError, UnicodeDecodeError) as exc:
        facts = _facts(head, arrival, policy, None)
        return _refuse(facts, ErrorCode.INVALID_REQUEST, str(exc))
    facts = _facts(head, arrival, policy, RequestTarget("https", host, port, "", ""))
    program = None
    if policy.needs_program(host, port, None):
        program = yield from _identify()
    decision = policy.authorize(
        method="CONNECT", host=host, port=port, path=None, scheme="https", program=program
    )
    if not decision.allowed:
        assert decision.code is not None
        return _refuse(facts, decision.code, decision.detail, decision)
    # Validated now so a refused destination fails at CONNECT; every request inside an
    # inspected tunnel resolves and validates again before it is dialled.
    addresses = yield from _destinations(policy, facts, decision, host, port)
    if isinstance(addresses, Refuse):
        return addresses
    if decision.tls is not TlsMode.SKIP:
        return Forward(facts, decision, connect=True)
    dialed = yield Dial("https", host, port, addresses, tls=False)
    assert isinstance(dialed, Dialed)
    if dialed.address is None:
        return _refuse(facts, ErrorCode.UPSTREAM_UNREACHABLE, dialed.error, decision)
    return Forward(facts, decision, address=dialed.address, connect=True, raw=True)


def _identify() -> Generator[Command, Result, Program]:
    program = yield IdentifyProgram()
    assert isinstance(program, Program)
    return program


def _destinations(
    policy: CompiledPolicy, facts: RequestFacts, decision: Decision, host: str, port: int
) -> Generator[Command, Result, tuple[IPAddress, ...] | Refuse]:
    resolved = yield Resolve(host, port)
    assert isinstance(resolved, Resolved)
    if resolved.error:
        detail = f"{host} did not resolve: {resolved.error}"
        return _refuse(facts, ErrorCode.UPSTREAM_UNREACHABLE, detail, decision)
    usable, problem = policy.usable_addresses(resolved.addresses, decision.networks)
    if problem is not None:
        return _refuse(facts, ErrorCode.SSRF_DENIED, f"{host}: {problem}", decision)
    return usable


def _http_flow(policy: CompiledPolicy, head: RequestHead, arrival: Arrival) -> Flow:
    try:
        target = request_target(head, arrival.tunnel)
    except (FramingError, UnicodeDecodeError) as exc:
        return _refuse(_facts(head, arrival, policy, None), ErrorCode.INVALID_REQUEST, str(exc))
    if head.version == b"HTTP/1.1" and head.first("host") is None:
        facts = _facts(head, arrival, policy, target)
        return _refuse(facts, ErrorCode.INVALID_REQUEST, "missing Host header")
    method = head.method.decode("ascii")
    websocket = handshake_key(head)
    program = None
    if policy.needs_program(target.host, target.port, target.target):
        program = yield from _identify()
    decision = policy.authorize(
        method=method,
        host=target.host,
        port=target.port,
        path=target.target,
        scheme=target.scheme,
        header_names=(f.name.decode("ascii") for f in head.fields),
        program=program,
    )
    grants = decision.bindings
    drop = frozenset(b.header_name.lower().encode() for b in grants)
    # Events show the agent's headers redacted, the bindings' headers in any spelling too.
    applying: tuple[GrantBinding | StaticBinding, ...] = (*grants, *decision.placed)
    hidden = tuple(b.header_name for b in applying if b.header_name)
    facts = _facts(head, arrival, policy, target, hidden)
    if not decision.allowed:
        assert decision.code is not None
        return _refuse(facts, decision.code, decision.detail, decision)

    addresses = yield from _destinations(policy, facts, decision, target.host, target.port)
    if isinstance(addresses, Refuse):
        return addresses
    if grants and target.scheme == "http":
        problem = policy.cleartext_problem(target.host, addresses)
        if problem is not None:
            return _refuse(facts, ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED, problem, decision)
    # A request with a body (or that h11 must frame for us: HEAD, HTTP/1.0, Expect) keeps
    # the agent's side in an h11 connection, and h11's own refusals are refusals here,
    # before anything is dialled. A bodiless HTTP/1.1 request (most of them) needs none.
    server: h11.Connection | None = None
    kept: Headers = []
    for item in head.fields:
        if item.lower in drop:
            continue
        if item.spaced:  # RFC 9112 §5.1: refused unless it is being replaced anyway
            detail = "whitespace between a header name and its colon"
            return _refuse(facts, ErrorCode.INVALID_REQUEST, detail, decision)
        kept.append((item.name, item.value))
    if not _bodiless(head):
        try:
            server = h11.Connection(h11.SERVER)
            kept_head = RequestHead(
                head.method,
                head.target,
                head.version,
                tuple(f for f in head.fields if f.lower not in drop),
            )
            server.receive_data(serialize_head(kept_head))
            request = server.next_event()
            if not isinstance(request, h11.Request):
                raise FramingError("incomplete request head")
        except (FramingError, h11.RemoteProtocolError) as exc:
            return _refuse(facts, ErrorCode.INVALID_REQUEST, str(exc), decision)

    stored = _Stored(target.target, kept)
    if policy.placeholders:
        refusal = yield from _stored_credentials(
            policy, head, decision, facts, target, addresses, server, program, stored
        )
        if refusal is not None:
            return refusal

    inject: list[tuple[str, str]] = []
    obtained = (yield ObtainTokens(tuple(grants))) if grants else Grants(())
    assert isinstance(obtained, Grants)
    for binding, granted in zip(grants, obtained.each, strict=True):
        try:
            if granted.error is not None:
                raise granted.error
            inject.append(credential_header(binding, granted.token))
        except GrantError as error:
            # Any grant failing fails the whole request: no partial injection.
            return _refuse(
                facts,
                ErrorCode.TOKEN_GRANT_FAILED,
                error.detail,
                decision,
                reason=error.reason,
                failed=binding,
            )

    dialed = yield Dial(
        target.scheme, target.host, target.port, addresses, tls=target.scheme == "https"
    )
    assert isinstance(dialed, Dialed)
    if dialed.address is None:
        return _refuse(facts, ErrorCode.UPSTREAM_UNREACHABLE, dialed.error, decision)
    headers = upstream_request_headers(
        stored.headers, host=target.authority.encode("ascii"), inject=[*stored.add, *inject]
    )
    if websocket is not None:
        headers = upgrade_request_headers(headers)
        if not any(name.lower() == b"sec-websocket-key" for name, _ in headers):
            detail = "the WebSocket handshake names its own headers in Connection"
            return _refuse(facts, ErrorCode.INVALID_REQUEST, detail, decision)
    return Forward(
        facts,
        decision,
        method=head.method,
        target=stored.target,
        headers=headers,
        address=dialed.address,
        server=server,
        keep_alive=websocket is None
        and (head.first("connection") is None or b"close" not in head.tokens("connection")),
        body=stored.body,
        body_complete=stored.body_complete,
        credentials=tuple(sorted(stored.used)),
        websocket=websocket,
    )


@dataclass(slots=True)
class _Stored:
    """A request as stored credentials leave it: target and headers with bound
    placeholders replaced, headers they add, the body read (if it had to be) and which
    credentials went in."""

    target: str
    headers: Headers
    add: list[tuple[str, str]] = field(default_factory=list, repr=False)
    body: bytes | None = field(default=None, repr=False)
    body_complete: bool = True
    used: frozenset[str] = frozenset()


def _stored_credentials(
    policy: CompiledPolicy,
    head: RequestHead,
    decision: Decision,
    facts: RequestFacts,
    target: RequestTarget,
    addresses: tuple[IPAddress, ...],
    server: h11.Connection | None,
    program: Program | None,
    stored: _Stored,
) -> Generator[Command, Result, Refuse | None]:
    """Replace bound placeholders in ``stored`` (target, headers, a body that opted in),
    add the headers stored credentials place; a refusal when a placeholder is anywhere its
    credential is not bound, or a credential may not go on this request at all."""
    table = policy.placeholders
    matching = table.matching(target.host, target.port, target.path)
    allowed = frozenset(b.owner for b in matching)
    try:
        rewritten = rewrite_target(stored.target, table, allowed)
        if isinstance(rewritten, Mismatch):
            return _mismatch(facts, rewritten, decision)
        headers = rewrite_headers(stored.headers, table, allowed)
        if isinstance(headers, Mismatch):
            return _mismatch(facts, headers, decision)
        stored.headers, in_headers = headers
        stored.add, stored.target, placed = placements(
            decision.placed, stored.headers, rewritten.value, table
        )
        used = rewritten.used | in_headers | placed
        if server is not None:
            read = yield ReadBody(server)
            assert isinstance(read, BodyRead)
            if read.error:
                return _refuse(facts, ErrorCode.INVALID_REQUEST, read.error, decision)
            body = _stored_body(head, read, table, matching)
            if isinstance(body, str):
                return _refuse(facts, ErrorCode.INVALID_REQUEST, body, decision, status=413)
            if isinstance(body, Mismatch):
                return _mismatch(facts, body, decision)
            stored.body, stored.body_complete = body.value, read.complete
            used |= body.used
            if body.used:  # reframed: the rewritten body's own length
                stored.headers = [
                    (n, v) for n, v in stored.headers if n.lower() not in _BODY_FRAMING
                ]
                stored.add.append(("Content-Length", str(len(stored.body))))
    except Unusable as exc:
        return _refuse(
            facts,
            ErrorCode.TOKEN_GRANT_FAILED,
            str(exc),
            decision,
            reason=GrantFailure.GRANT_MISCONFIGURED,
        )
    stored.used = used
    covering = {b.owner: b for b in (*matching, *decision.placed)}
    for owner in sorted(used):
        binding = covering.get(owner)
        if binding is None:  # cannot happen: a value only goes where a binding allows it
            return _mismatch(facts, Mismatch(owner, "this request"), decision)
        refusal = policy.credential_refusal(
            binding, facts.method, target.host, target.port, target.scheme, program
        )
        if refusal is not None:
            return _refuse(facts, refusal[0], refusal[1], decision)
    if used and target.scheme == "http":
        problem = policy.cleartext_problem(target.host, addresses)
        if problem is not None:
            return _refuse(facts, ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED, problem, decision)
    return None


_BODY_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


def _stored_body(
    head: RequestHead, read: BodyRead, table: PlaceholderTable, matching: tuple[StaticBinding, ...]
) -> Rewritten[bytes] | Mismatch | str:
    """The body with bound placeholders replaced where an endpoint opted in (a str: why
    it cannot be); elsewhere a placeholder in it is a mismatch."""
    opted = frozenset(b.owner for b in matching if b.body_rewrite)
    if not opted:
        found = find_in_body(read.data, table)
        return found if found is not None else Rewritten(read.data)
    if not read.complete:
        return "the body is too large to search for credential placeholders"
    content_type = (head.first("content-type") or b"").decode("latin-1")
    return rewrite_body(read.data, content_type, table, opted)


def _mismatch(facts: RequestFacts, mismatch: Mismatch, decision: Decision) -> Refuse:
    return _refuse(facts, ErrorCode.CREDENTIAL_ENDPOINT_MISMATCH, mismatch.detail, decision)


def _bodiless(head: RequestHead) -> bool:
    """An HTTP/1.1 request without a body, whose answer needs no request-specific framing:
    relayed without an h11 connection for the agent's side."""
    if head.version != b"HTTP/1.1" or head.method == b"HEAD":
        return False
    length = None
    for item in head.fields:  # one pass (parse_head refused a second Content-Length)
        lower = item.lower
        if lower == b"transfer-encoding" or lower == b"expect":
            return False
        if lower == b"content-length" and length is None:
            length = item.value
    return length is None or length.lstrip(b"0") == b""


def run_flow(flow: Flow, answer: Callable[[Command], Result]) -> tuple[list[Command], Outcome]:
    """Drive a flow synchronously: each command goes to ``answer``; returns the commands
    seen and the outcome. (How tests feed plain results to a flow.)"""
    commands: list[Command] = []
    try:
        command = next(flow)
        while True:
            commands.append(command)
            command = flow.send(answer(command))
    except StopIteration as stop:
        return commands, stop.value
