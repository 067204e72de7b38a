"""The per-request HTTP/1.1 relay: every request on a connection is parsed and decided.

One :class:`HttpRelay` serves one agent connection (a forward connection, or the inside
of a CONNECT tunnel). For each request it reads the head itself (:mod:`.framing`), asks
:func:`.decision.authorize`, validates the destination, obtains and places a token, and
only then dials and forwards; bodies stream in both directions through h11, chunk by
chunk. A fresh server-side ``h11.Connection`` parses each request, so no byte of a
pipelined request is read by anything before its own head has been checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from dataclasses import dataclass

import h11

from grantbox.profiles import GrantBinding

from .answers import ErrorCode, ProxyAnswer
from .context import HEAD_TIMEOUT, IDLE_TIMEOUT, ProxyContext, log
from .decision import Decision, authorize, cleartext_address_problem
from .destinations import IPAddress, address_problem
from .events import RequestFacts, http_decision, http_injection
from .framing import (
    FramingError,
    HeadTooLarge,
    RequestHead,
    find_head_end,
    parse_head,
    serialize_head,
)
from .rewrite import downstream_response_headers, redact, upstream_request_headers
from .streams import READ_SIZE, ByteStream, SocketStream
from .targets import RequestTarget, Tunnel, request_target
from .tokens import InjectionError, credential_header, grant_failure_reason

_LEADING_EMPTY_LINES = re.compile(rb"(?:\r\n)+")


@dataclass(slots=True)
class ConnectRequested:
    """A CONNECT arrived on a forward connection; the tunnel adapter takes over."""

    head: RequestHead


@dataclass(slots=True)
class _Upstream:
    key: tuple[str, str, int]
    address: IPAddress
    stream: SocketStream
    conn: h11.Connection


class _HeadTimeout(Exception):
    """A request head started but did not complete within HEAD_TIMEOUT."""


class _ClientGone(Exception):
    """The agent closed its side mid-request."""


class _BadRequestBody(Exception):
    """The agent's request body broke HTTP/1.1 framing (e.g. a malformed chunk)."""


class HttpRelay:
    def __init__(
        self,
        ctx: ProxyContext,
        client: ByteStream,
        *,
        tunnel: Tunnel | None = None,
        buffer: bytes = b"",
        peer: str = "",
    ) -> None:
        self._ctx = ctx
        self._client = client
        self._tunnel = tunnel
        self._buffer = bytearray(buffer)
        self._peer = peer
        self._upstream: _Upstream | None = None

    async def run(self) -> ConnectRequested | None:
        """Serve requests until the connection ends (or a CONNECT hands it over)."""
        try:
            while True:
                try:
                    raw = await self._read_head()
                except HeadTooLarge as exc:
                    await self._refuse(_invalid(exc))
                    return None
                except _HeadTimeout:
                    answer = ProxyAnswer(
                        ErrorCode.INVALID_REQUEST,
                        status=408,
                        detail=f"request head not complete within {HEAD_TIMEOUT:g} s",
                    )
                    await self._refuse(answer)
                    return None
                except TimeoutError:
                    return None
                if raw is None:
                    return None
                try:
                    head = parse_head(raw)
                except FramingError as exc:
                    await self._refuse(_invalid(exc), method=raw.split(b" ", 1)[0][:16])
                    return None
                if head.method == b"CONNECT":
                    if self._tunnel is not None:
                        answer = ProxyAnswer(
                            ErrorCode.INVALID_REQUEST, detail="CONNECT inside a tunnel"
                        )
                        await self._refuse(answer, method=b"CONNECT")
                        return None
                    await self._close_upstream()
                    return ConnectRequested(head)
                if not await self._serve(head):
                    return None
        finally:
            await self._close_upstream()

    @property
    def leftover(self) -> bytes:
        return bytes(self._buffer)

    # -- reading -------------------------------------------------------------------------

    async def _read_head(self) -> bytes | None:
        """The next head. An idle connection may wait :data:`IDLE_TIMEOUT` for it to start
        (TimeoutError); once it has started it must be complete within :data:`HEAD_TIMEOUT`
        (:class:`_HeadTimeout`), so a head trickled byte by byte cannot hold the
        connection for the idle timeout."""
        loop = asyncio.get_running_loop()
        head_started = False
        try:
            async with asyncio.timeout(IDLE_TIMEOUT) as deadline:
                while True:
                    # RFC 9112 §2.2: ignore empty lines before a request line - all of
                    # them in one step, so a flood of CRLFs costs no more than any bytes.
                    empty = _LEADING_EMPTY_LINES.match(self._buffer)
                    if empty is not None:
                        del self._buffer[: empty.end()]
                    if self._buffer and not head_started:
                        head_started = True
                        when = min(deadline.when() or math.inf, loop.time() + HEAD_TIMEOUT)
                        deadline.reschedule(when)
                    end = find_head_end(self._buffer)
                    if end > 0:
                        raw = bytes(self._buffer[:end])
                        del self._buffer[:end]
                        return raw
                    data = await self._client.recv()
                    if not data:
                        return None
                    self._buffer.extend(data)
        except TimeoutError:
            if head_started:
                raise _HeadTimeout from None
            raise

    # -- one request ---------------------------------------------------------------------

    async def _serve(self, head: RequestHead) -> bool:
        """Handle one request; True when the connection may carry another."""
        method = head.method.decode("ascii")
        try:
            target = request_target(head, self._tunnel)
        except FramingError as exc:
            await self._refuse(_invalid(exc), method=head.method)
            return False
        decision = authorize(
            self._ctx.config,
            method=method,
            host=target.host,
            port=target.port,
            path=target.target,
            scheme=target.scheme,
            header_names=(f.name.decode("ascii") for f in head.fields),
        )
        # Events show the agent's headers with credentials (and the binding's header, in
        # whatever form the agent sent it) redacted.
        hidden = (decision.binding.header_name,) if decision.binding else ()
        facts = RequestFacts(
            method=method,
            scheme=target.scheme,
            host=target.host,
            port=target.port,
            path=target.path,
            sandbox_id=self._ctx.config.sandbox_id,
            headers=redact(((f.name, f.value) for f in head.fields), extra=hidden),
            client=self._peer,
        )
        self._record_decision(facts, decision)
        if not decision.allowed:
            assert decision.code is not None
            await self._answer(ProxyAnswer(decision.code, detail=decision.detail), target)
            return False
        try:
            return await self._forward(head, target, decision, facts)
        except ProxyAnswer as answer:
            self._ctx.metrics.requests.labels("denied", str(answer.code)).inc()
            self._ctx.emit(
                http_decision(facts, allowed=False, code=str(answer.code), detail=answer.detail)
            )
            await self._answer(answer, target)
            return False

    def _record_decision(self, facts: RequestFacts, decision: Decision) -> None:
        # Metrics count final outcomes: a denial here, or (in _forward) a request that was
        # actually sent upstream; a later refusal (ssrf, grant, dial) is counted there.
        if not decision.allowed:
            self._ctx.metrics.requests.labels("denied", str(decision.code)).inc()
        self._ctx.emit(
            http_decision(
                facts,
                allowed=decision.allowed,
                code=str(decision.code) if decision.code else None,
                detail=decision.detail,
                entry=decision.entry,
                audit_denial=decision.audit_denial,
            )
        )
        if decision.audit_denial:
            log.warning("audit-mode endpoint let through: %s", decision.audit_denial)

    async def _forward(
        self, head: RequestHead, target: RequestTarget, decision: Decision, facts: RequestFacts
    ) -> bool:
        binding = decision.binding
        addresses = await self._addresses(target, decision)
        if binding is not None and target.scheme == "http":
            problem = cleartext_address_problem(target.host, addresses)
            if problem is not None:
                raise ProxyAnswer(ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED, detail=problem)
        try:
            clean = serialize_head(head, drop=binding.header_name if binding else None)
        except FramingError as exc:
            raise _invalid(exc) from exc
        down = h11.Connection(h11.SERVER)
        down.receive_data(clean)
        try:
            request = down.next_event()
        except h11.RemoteProtocolError as exc:
            raise ProxyAnswer(ErrorCode.INVALID_REQUEST, detail=str(exc)) from exc
        if not isinstance(request, h11.Request):
            raise ProxyAnswer(ErrorCode.INVALID_REQUEST, detail="incomplete request head")

        inject: tuple[str, str] | None = None
        if binding is not None:
            inject = await self._inject(binding, facts)
        upstream = await self._connect(target, addresses)
        headers = upstream_request_headers(
            request.headers.raw_items(), host=target.authority.encode("ascii"), inject=inject
        )
        outgoing = h11.Request(
            method=request.method, target=target.target.encode("ascii"), headers=headers
        )
        self._ctx.metrics.requests.labels("allowed", "audit" if decision.audit_denial else "").inc()
        if self._buffer:  # (an empty receive_data would tell h11 the agent hung up)
            down.receive_data(bytes(self._buffer))
            self._buffer.clear()
        return await self._exchange(down, upstream, outgoing)

    async def _addresses(self, target: RequestTarget, decision: Decision) -> tuple[IPAddress, ...]:
        current = self._upstream
        if current is not None and not current.stream.reusable:
            await self._close_upstream()
            current = None
        if current is not None and current.key == (target.scheme, target.host, target.port):
            # Reuse only while the open connection's address is still one this request's
            # endpoint may reach.
            if address_problem(current.address, decision.allowed_ips) is None:
                return (current.address,)
            await self._close_upstream()
        return await self._ctx.destinations(target.host, target.port, decision.allowed_ips)

    async def _inject(self, binding: GrantBinding, facts: RequestFacts) -> tuple[str, str]:
        try:
            token = await self._ctx.tokens.obtain(binding)
            header = credential_header(binding, token.value)
        except InjectionError as exc:
            reason, detail = exc.reason, exc.detail
        except Exception as exc:  # any grant failure fails the request closed
            reason = grant_failure_reason(exc)
            detail = str(getattr(exc, "detail", "")) or type(exc).__name__
        else:
            self._ctx.metrics.injections.labels("injected").inc()
            self._ctx.emit(http_injection(facts, binding_id=binding.id, ok=True))
            return header
        self._ctx.metrics.injections.labels(reason).inc()
        self._ctx.emit(
            http_injection(facts, binding_id=binding.id, ok=False, reason=reason, detail=detail)
        )
        log.warning("token grant failed for %s: %s (%s)", binding.id, reason, detail)
        raise ProxyAnswer(ErrorCode.TOKEN_GRANT_FAILED, reason=reason, detail=detail)

    async def _connect(self, target: RequestTarget, addresses: tuple[IPAddress, ...]) -> _Upstream:
        key = (target.scheme, target.host, target.port)
        current = self._upstream
        if current is not None and current.key == key and current.conn.our_state is h11.IDLE:
            return current
        await self._close_upstream()
        stream, address = await self._ctx.dial(
            target.host, target.port, addresses, tls=target.scheme == "https"
        )
        self._upstream = _Upstream(key, address, stream, h11.Connection(h11.CLIENT))
        return self._upstream

    # -- streaming -----------------------------------------------------------------------

    async def _exchange(self, down: h11.Connection, up: _Upstream, request: h11.Request) -> bool:
        try:
            await up.stream.send(up.conn.send(request))
        except (OSError, ConnectionError) as exc:
            await self._close_upstream()
            raise ProxyAnswer(ErrorCode.UPSTREAM_UNREACHABLE, detail=str(exc)) from exc
        started = asyncio.Event()
        body = asyncio.create_task(self._send_body(down, up))
        reply = asyncio.create_task(self._send_response(down, up, started))
        try:
            # Without a failure both finish: an upstream that answered early still gets the
            # rest of the body (or fails the send by closing, which ends the connection).
            await asyncio.wait({body, reply}, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            # Also on cancellation (proxy stopping): never leave a pump running.
            for task in (body, reply):
                task.cancel()
            await asyncio.gather(body, reply, return_exceptions=True)
        failure: BaseException | None = None
        for task in (body, reply):
            if not task.cancelled() and task.exception() is not None:
                failure = task.exception()
                break
        if failure is not None:
            await self._close_upstream()
            if started.is_set():
                return False
            if isinstance(failure, _ClientGone):
                return False
            if isinstance(failure, _BadRequestBody):
                await self._answer(ProxyAnswer(ErrorCode.INVALID_REQUEST, detail=str(failure)))
                return False
            await self._answer(
                ProxyAnswer(ErrorCode.UPSTREAM_UNREACHABLE, detail=_upstream_failure(failure))
            )
            return False
        if body.cancelled() or down.their_state is not h11.DONE:
            await self._close_upstream()
            return False
        return self._finish_cycle(down, up)

    def _finish_cycle(self, down: h11.Connection, up: _Upstream) -> bool:
        trailing, _closed = down.trailing_data
        self._buffer[:0] = trailing
        if up.conn.our_state is h11.DONE and up.conn.their_state is h11.DONE:
            up.conn.start_next_cycle()
        else:
            self._upstream_dead()
        return down.our_state is h11.DONE and down.their_state is h11.DONE

    def _upstream_dead(self) -> None:
        if self._upstream is not None:
            stream = self._upstream.stream
            self._upstream = None
            task = asyncio.get_running_loop().create_task(stream.close())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _send_body(self, down: h11.Connection, up: _Upstream) -> None:
        while True:
            try:
                event = down.next_event()
            except h11.RemoteProtocolError as exc:
                raise _BadRequestBody(str(exc)) from exc
            if event is h11.NEED_DATA:
                try:
                    # A body that stops arriving must not hold the upstream connection.
                    data = await asyncio.wait_for(self._client.recv(), IDLE_TIMEOUT)
                except TimeoutError:
                    raise _ClientGone("agent stalled during the request body") from None
                if not data:
                    raise _ClientGone("agent closed during the request body")
                down.receive_data(data)
                continue
            if isinstance(event, h11.Data):
                self._ctx.metrics.bytes.labels("upstream").inc(len(event.data))
                await up.stream.send(up.conn.send(h11.Data(data=event.data)))
            elif isinstance(event, h11.EndOfMessage):
                tail = up.conn.send(h11.EndOfMessage())
                if tail:
                    await up.stream.send(tail)
                return
            elif event is h11.PAUSED:
                return
            else:
                raise _BadRequestBody(f"unexpected {type(event).__name__} in request body")

    async def _send_response(
        self, down: h11.Connection, up: _Upstream, started: asyncio.Event
    ) -> None:
        # Output is gathered while the upstream's bytes parse without waiting, and written
        # when more must be read (or at the end): fewer writes, fewer wake-ups.
        pending = bytearray()
        downstream = self._ctx.metrics.bytes.labels("downstream")
        while True:
            event = up.conn.next_event()
            if event is h11.NEED_DATA:
                if pending:
                    await self._client.send(bytes(pending))
                    pending.clear()
                up.conn.receive_data(await up.stream.recv())
                continue
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 100 and down.client_is_waiting_for_100_continue:
                    pending += down.send(event) or b""
                continue
            if isinstance(event, h11.Response):
                # Judged before anything is sent, so an unsafe head still gets the agent a 502.
                response = h11.Response(
                    status_code=event.status_code,
                    headers=downstream_response_headers(event.headers.raw_items()),
                    reason=event.reason,
                )
                started.set()
                pending += down.send(response) or b""
            elif isinstance(event, h11.Data):
                downstream.inc(len(event.data))
                pending += down.send(event) or b""
                if len(pending) >= READ_SIZE:
                    await self._client.send(bytes(pending))
                    pending.clear()
            elif isinstance(event, h11.EndOfMessage):
                pending += down.send(h11.EndOfMessage()) or b""
                await self._client.send(bytes(pending))
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("upstream closed before answering")

    # -- answers -------------------------------------------------------------------------

    async def _refuse(self, answer: ProxyAnswer, method: bytes = b"") -> None:
        """Answer a request refused before its destination was known (bad framing)."""
        tunnel = self._tunnel
        facts = RequestFacts(
            method=method.decode("ascii", "replace") or "UNKNOWN",
            scheme=tunnel.scheme if tunnel else "http",
            host=tunnel.host if tunnel else "",
            port=tunnel.port if tunnel else 0,
            path="",
            sandbox_id=self._ctx.config.sandbox_id,
            client=self._peer,
        )
        self._ctx.metrics.requests.labels("denied", str(answer.code)).inc()
        self._ctx.emit(
            http_decision(facts, allowed=False, code=str(answer.code), detail=answer.detail)
        )
        await self._answer(answer)

    async def _answer(self, answer: ProxyAnswer, target: RequestTarget | None = None) -> None:
        shown = f"{target.host}:{target.port}" if target else ""
        log.info("proxy answered %s %s: %s", answer.status, answer.code, answer.detail)
        with contextlib.suppress(OSError, ConnectionError):
            await self._client.send(answer.to_bytes(shown))

    async def _close_upstream(self) -> None:
        if self._upstream is not None:
            stream = self._upstream.stream
            self._upstream = None
            await stream.close()


def _upstream_failure(failure: BaseException) -> str:
    """Operator detail for a failed exchange. h11 quotes the offending line, and a broken
    upstream line may echo the injected token, so protocol errors are named, not quoted."""
    if isinstance(failure, h11.ProtocolError):
        return f"upstream sent a malformed response ({type(failure).__name__})"
    return f"upstream failed: {failure!r}"


def _invalid(exc: FramingError) -> ProxyAnswer:
    status = 431 if isinstance(exc, HeadTooLarge) else None
    return ProxyAnswer(ErrorCode.INVALID_REQUEST, status=status, detail=str(exc))
