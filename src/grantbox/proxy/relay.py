"""The per-request HTTP/1.1 relay: it carries out each request's flow and its outcome.

One :class:`HttpRelay` serves one agent connection (a forward connection, or the inside
of a CONNECT tunnel). For each request it reads the head itself (:mod:`.framing`), runs the
request's :mod:`.flow` - carrying out its commands (resolve, identify the program, obtain a
token, dial) - hands the outcome to the recorder once, and then does what the outcome says:
answer a refusal, hand a CONNECT to the tunnel adapter, or forward the rewritten request.

Most requests have no body and most answers carry a Content-Length: those are written and
read without h11 (:func:`.framing.request_head_bytes`, :func:`.framing.parse_response_head`,
a strict subset of h11's reading), which is most of the proxy's speed. Everything else -
request bodies, chunked or close-delimited answers, 1xx, anything unusual - streams through
h11 chunk by chunk, as before. A fresh server-side ``h11.Connection`` parses each request
with a body, so no byte of a pipelined request is read by anything before its own head has
been checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import socket
import ssl
from dataclasses import dataclass, field

import h11

from .answers import ErrorCode, ProxyAnswer
from .context import ProxyContext
from .destinations import IPAddress
from .flow import (
    Arrival,
    BodyRead,
    Command,
    Dial,
    Dialed,
    Flow,
    Forward,
    IdentifyProgram,
    ObtainTokens,
    Outcome,
    ReadBody,
    Refuse,
    Resolve,
    Resolved,
    Result,
    refuse_unparsed,
    request_flow,
)
from .framing import (
    FramingError,
    HeadTooLarge,
    RequestHead,
    ResponseHead,
    find_head_end,
    parse_head,
    parse_response_head,
    request_head_bytes,
    response_head_end,
)
from .limits import Limits
from .policy import Program
from .rewrite import (
    ResponseFraming,
    UnsafeResponse,
    downstream_response_headers,
    relayed_head,
)
from .streams import READ_SIZE, ByteStream, SocketStream
from .targets import Tunnel
from .websocket import serve_websocket

_LEADING_EMPTY_LINES = re.compile(rb"(?:\r\n)+")

# The default deadlines under the names tests written before :class:`Limits` shorten
# (tests/security/test_slow_clients.py; tests/support/proxy_harness.py turns them into the
# Limits it passes in). Nothing here reads them: the proxy's limits are always its own.
HEAD_TIMEOUT = Limits().head_timeout
IDLE_TIMEOUT = Limits().idle_timeout


@dataclass(slots=True)
class AgentConnection:
    """One accepted agent connection: who it is, and (once asked) which program holds it."""

    peer: str = ""
    sock: socket.socket | None = field(default=None, repr=False)
    program: Program | None = None


@dataclass(slots=True)
class Handover:
    """An admitted CONNECT for the tunnel adapter; ``upstream`` is the dialled connection
    of a raw (``tls: skip``) tunnel."""

    outcome: Forward
    upstream: SocketStream | None
    leftover: bytes


@dataclass(slots=True)
class _Upstream:
    key: tuple[str, str, int]
    address: IPAddress
    stream: SocketStream
    idle: bool = True  # between two exchanges: it may carry the next request
    # The flow's results for a request reusing this connection (made once, not per request).
    resolved: Resolved = field(init=False)
    dialed: Dialed = field(init=False)

    def __post_init__(self) -> None:
        self.resolved = Resolved((self.address,))
        self.dialed = Dialed(self.address)


class _HeadTimeout(Exception):
    """A request head started but did not complete within the head deadline."""


class _ClientGone(Exception):
    """The agent closed its side mid-request."""


class _BadRequestBody(Exception):
    """The agent's request body broke HTTP/1.1 framing (e.g. a malformed chunk)."""


class _HeadDeadline:
    """When the wait for a connection's next request head gives up: one timer per
    connection, not one per request.

    Moving the deadline for the next request is an assignment. A timer armed for an earlier
    deadline re-arms itself for the current one when it fires (on a busy connection that is
    once per idle timeout); it is re-armed at once only when the deadline moves earlier (a
    started head has the shorter head timeout). At the deadline it cancels the waiting task,
    which reads that as a timeout, the way ``asyncio.timeout`` does.
    """

    __slots__ = ("_armed", "_expired", "_loop", "_task", "_timer", "_waiting", "when")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self._armed = math.inf
        self._waiting = False
        self._expired = False
        self.when = math.inf

    def wait_until(self, when: float) -> None:
        """A wait (from now on) that gives up at loop time ``when``."""
        self.when = when
        self._waiting = True
        if when < self._armed:
            self._arm(when)

    def done(self) -> None:
        self._waiting = False

    def close(self) -> None:
        self._waiting = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def timed_out(self) -> bool:
        """After a CancelledError in the wait: whether it was this deadline's, and only
        this deadline's (a proxy stopping cancels too)."""
        if not self._expired:
            return False
        self._expired = False
        return self._task is not None and self._task.uncancel() == 0

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)
        self._armed = when

    def _fire(self) -> None:
        self._timer, self._armed = None, math.inf
        if not self._waiting:
            return
        if self._loop.time() < self.when:
            self._arm(self.when)
        elif self._task is not None:
            self._expired = True
            self._task.cancel()


class HttpRelay:
    def __init__(
        self,
        ctx: ProxyContext,
        client: ByteStream,
        agent: AgentConnection,
        *,
        tunnel: Tunnel | None = None,
        buffer: bytes = b"",
    ) -> None:
        self._ctx = ctx
        self._client = client
        self._agent = agent
        self._arrival = Arrival(tunnel, agent.peer)
        self._buffer = bytearray(buffer)
        self._upstream: _Upstream | None = None
        self._sent_up = ctx.metrics.upstream_bytes
        self._sent_down = ctx.metrics.downstream_bytes
        self._deadline: _HeadDeadline | None = None
        self._loop = asyncio.get_running_loop()

    async def run(self) -> Handover | None:
        """Serve requests until the connection ends, or return an admitted CONNECT for the
        tunnel adapter to open."""
        self._deadline = _HeadDeadline()
        try:
            while True:
                try:
                    raw = await self._read_head()
                except HeadTooLarge as exc:
                    await self._refuse_unparsed(_invalid(exc))
                    return None
                except _HeadTimeout:
                    detail = f"request head not complete within {self._ctx.limits.head_timeout:g} s"
                    answer = ProxyAnswer(ErrorCode.INVALID_REQUEST, status=408, detail=detail)
                    await self._refuse_unparsed(answer)
                    return None
                except TimeoutError:
                    return None
                if raw is None:
                    return None
                try:
                    head = parse_head(raw)
                except FramingError as exc:
                    await self._refuse_unparsed(_invalid(exc), raw.split(b" ", 1)[0][:16])
                    return None
                outcome = await self._decide(head)
                if isinstance(outcome, Refuse):
                    await self._answer(outcome)
                    return None
                if outcome.connect:
                    upstream = None
                    if outcome.raw and self._upstream is not None:
                        upstream, self._upstream = self._upstream.stream, None
                    return Handover(outcome, upstream, bytes(self._buffer))
                if not await self._forward(outcome):
                    return None
        finally:
            self._deadline.close()
            await self._close_upstream()

    # -- reading -------------------------------------------------------------------------

    async def _read_head(self) -> bytes | None:
        """The next head. An idle connection may wait the idle timeout for it to start
        (TimeoutError); once it has started it must be complete within the head timeout
        (:class:`_HeadTimeout`), so a head trickled byte by byte cannot hold the
        connection for the idle timeout."""
        limits = self._ctx.limits
        deadline = self._deadline
        assert deadline is not None
        loop = self._loop
        head_started = False
        deadline.wait_until(loop.time() + limits.idle_timeout)
        try:
            while True:
                # RFC 9112 §2.2: ignore empty lines before a request line - all of them in
                # one step, so a flood of CRLFs costs no more than any bytes.
                if self._buffer[:2] == b"\r\n":
                    empty = _LEADING_EMPTY_LINES.match(self._buffer)
                    if empty is not None:
                        del self._buffer[: empty.end()]
                end = find_head_end(self._buffer)
                if end > 0:
                    raw = bytes(self._buffer[:end])
                    del self._buffer[:end]
                    return raw
                if self._buffer and not head_started:
                    # A head has started and is not complete: it has head_timeout.
                    head_started = True
                    deadline.wait_until(min(deadline.when, loop.time() + limits.head_timeout))
                try:
                    data = await self._client.recv()
                except (OSError, ConnectionError, ssl.SSLError):
                    return None  # the agent reset or broke the connection: it is over
                if not data:
                    return None
                self._buffer.extend(data)
        except asyncio.CancelledError:
            if not deadline.timed_out():
                raise
            if head_started:
                raise _HeadTimeout from None
            raise TimeoutError from None
        finally:
            deadline.done()

    # -- the flow ------------------------------------------------------------------------

    async def _decide(self, head: RequestHead) -> Outcome:
        """Run the request's flow, carrying out its commands; record its one outcome."""
        flow: Flow = request_flow(self._ctx.policy, head, self._arrival)
        try:
            command = next(flow)
            while True:
                command = flow.send(await self._carry_out(command))
        except StopIteration as stop:
            outcome: Outcome = stop.value
        self._ctx.recorder.record(outcome)
        return outcome

    async def _carry_out(self, command: Command) -> Result:
        ctx = self._ctx
        if isinstance(command, Resolve):
            reused = self._reusable(command.host, command.port)
            if reused is not None:
                return reused.resolved
            return await ctx.resolve(command.host, command.port)
        if isinstance(command, ObtainTokens):
            return await ctx.obtain_all(command.bindings)
        if isinstance(command, Dial):
            return await self._dial(command)
        if isinstance(command, ReadBody):
            return await self._read_body(command.server)
        assert isinstance(command, IdentifyProgram)
        if self._agent.program is None:
            self._agent.program = await ctx.identify(self._agent.sock)
        return self._agent.program

    async def _read_body(self, down: h11.Connection) -> BodyRead:
        """The request body, read before anything is dialled so the flow can look for
        credential placeholders in it: all of it up to the limit, else its first part
        (the rest streams with the request)."""
        limit = self._ctx.limits.credential_body_max
        if self._buffer:
            down.receive_data(bytes(self._buffer))
            self._buffer.clear()
        if down.client_is_waiting_for_100_continue:
            await self._client.send(
                down.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
        body = bytearray()
        while len(body) <= limit:
            try:
                event = down.next_event()
            except h11.RemoteProtocolError as exc:
                return BodyRead(error=f"malformed request body: {exc}")
            if event is h11.NEED_DATA:
                try:
                    async with asyncio.timeout(self._ctx.limits.idle_timeout):
                        data = await self._client.recv()
                except (TimeoutError, OSError, ConnectionError, ssl.SSLError):
                    return BodyRead(error="the agent stopped sending the request body")
                if not data:
                    return BodyRead(error="the agent closed during the request body")
                down.receive_data(data)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return BodyRead(bytes(body))
            else:
                return BodyRead(error=f"unexpected {type(event).__name__} in the request body")
        return BodyRead(bytes(body), complete=False)

    def _reusable(self, host: str, port: int) -> _Upstream | None:
        """The open upstream connection to this destination, if it can carry a request."""
        current = self._upstream
        if current is None or current.key[1:] != (host, port):
            return None
        if not current.idle or not current.stream.reusable:
            return None
        return current

    async def _dial(self, command: Dial) -> Dialed:
        key = (command.scheme, command.host, command.port)
        current = self._upstream
        if (
            current is not None
            and current.key == key
            and current.address in command.addresses
            and current.idle
            and current.stream.reusable
        ):
            return current.dialed
        await self._close_upstream()
        stream, dialed = await self._ctx.dial(
            command.host, command.port, command.addresses, tls=command.tls
        )
        if stream is not None and dialed.address is not None:
            self._upstream = _Upstream(key, dialed.address, stream)
        return dialed

    # -- forwarding ----------------------------------------------------------------------

    async def _forward(self, outcome: Forward) -> bool:
        """Send the admitted request and stream the exchange; True when the connection may
        carry another request."""
        upstream = self._upstream
        down = outcome.server
        assert upstream is not None
        if outcome.websocket is not None:  # the tunnel takes the upstream and the connection
            self._upstream, leftover = None, bytes(self._buffer)
            self._buffer.clear()
            request = h11.Request(
                method=outcome.method,
                target=outcome.target.encode("ascii"),
                headers=outcome.headers,
            )
            # The upstream is between two exchanges: a fresh h11 client is where it stands.
            await serve_websocket(
                self._ctx, self._client, upstream.stream, h11.Connection(h11.CLIENT), request,
                outcome.websocket, leftover,
            )  # fmt: skip
            return False
        if down is None:
            return await self._exchange_bodiless(outcome, upstream)
        outgoing = h11.Request(
            method=outcome.method, target=outcome.target.encode("ascii"), headers=outcome.headers
        )
        if self._buffer:  # (an empty receive_data would tell h11 the agent hung up)
            down.receive_data(bytes(self._buffer))
            self._buffer.clear()
        return await self._exchange(
            down, upstream, outgoing, outcome.body or b"", outcome.body is not None
        )

    async def _exchange_bodiless(self, outcome: Forward, up: _Upstream) -> bool:
        """A request without a body: send its head, then relay the answer in this task (no
        body to stream alongside, so no second task)."""
        up.idle = False
        head = request_head_bytes(outcome.method, outcome.target.encode("ascii"), outcome.headers)
        try:
            await up.stream.send(head)
        except (OSError, ConnectionError) as exc:
            await self._close_upstream()
            detail = f"sending the request failed: {exc}"
            await self._send_answer(ProxyAnswer(ErrorCode.UPSTREAM_UNREACHABLE, detail=detail))
            return False
        received = bytearray()
        try:
            while True:
                data = await up.stream.recv()
                if not data:
                    raise ConnectionError("upstream closed before answering")
                received += data
                end = response_head_end(received)
                if end:
                    break
            answer = parse_response_head(bytes(received[:end])) if end > 0 else None
            if answer is None:  # not the common shape: h11 reads it (or refuses it)
                return await self._answer_through_h11(outcome, up, bytes(received))
            reply = relayed_head(
                answer.status, answer.reason, answer.headers, close=not outcome.keep_alive
            )
        except (OSError, ConnectionError) as failure:
            await self._close_upstream()
            detail = _upstream_failure(failure)
            await self._send_answer(ProxyAnswer(ErrorCode.UPSTREAM_UNREACHABLE, detail=detail))
            return False
        return await self._relay_body(outcome, up, answer, reply, received[end:])

    async def _relay_body(
        self, outcome: Forward, up: _Upstream, answer: ResponseHead, reply: bytes, body: bytearray
    ) -> bool:
        """Pass a Content-Length body on as it arrives, after the agent's ``reply`` head.
        Bytes past the body (a broken or hostile upstream) end the upstream connection."""
        remaining = answer.length
        pending = reply + body[:remaining]
        surplus = len(body) > remaining
        remaining -= len(pending) - len(reply)
        relayed = len(pending) - len(reply)
        try:
            while remaining:
                await self._client.send(pending)
                data = await up.stream.recv()
                if not data:
                    raise ConnectionError("upstream closed in the middle of its answer")
                pending = data[:remaining]
                surplus = len(data) > remaining
                remaining -= len(pending)
                relayed += len(pending)
            await self._client.send(pending)
        except (OSError, ConnectionError):
            await self._close_upstream()
            return False
        finally:
            self._sent_down.inc(relayed)
        if answer.close or surplus:
            self._upstream_dead()
        else:
            up.idle = True
        return outcome.keep_alive

    async def _answer_through_h11(self, outcome: Forward, up: _Upstream, received: bytes) -> bool:
        """Relay an answer outside the fast subset with h11, from the bytes read so far."""
        conn = h11.Connection(h11.CLIENT)
        # Puts h11 where the request left the connection (its bytes were sent already).
        conn.send(
            h11.Request(
                method=outcome.method,
                target=outcome.target.encode("ascii"),
                headers=outcome.headers,
            )
        )
        conn.send(h11.EndOfMessage())
        conn.receive_data(received)
        framing = ResponseFraming()
        pending = bytearray()
        started = False
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if pending:
                        await self._client.send(bytes(pending))
                        pending.clear()
                    conn.receive_data(await up.stream.recv())
                    continue
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    # Judged before anything is sent: an unsafe head still gets a 502.
                    headers = downstream_response_headers(event.headers.raw_items())
                    pending += framing.head(
                        event.status_code, event.reason, headers, close=not outcome.keep_alive
                    )
                    started = True
                elif isinstance(event, h11.Data):
                    self._sent_down.inc(len(event.data))
                    pending += framing.data(event.data)
                    if len(pending) >= READ_SIZE:
                        await self._client.send(bytes(pending))
                        pending.clear()
                elif isinstance(event, h11.EndOfMessage):
                    pending += framing.end()
                    await self._client.send(bytes(pending))
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("upstream closed before answering")
        except (h11.ProtocolError, UnsafeResponse, OSError, ConnectionError) as failure:
            await self._close_upstream()
            if not started:
                detail = _upstream_failure(failure)
                await self._send_answer(ProxyAnswer(ErrorCode.UPSTREAM_UNREACHABLE, detail=detail))
            return False
        self._end_exchange(up, conn)
        return outcome.keep_alive

    async def _exchange(
        self,
        down: h11.Connection,
        up: _Upstream,
        request: h11.Request,
        first: bytes = b"",
        read: bool = False,
    ) -> bool:
        """Send the request and stream both bodies; ``first`` is body the flow already
        read (``read``: the flow read the body, all of it when the agent's side is done)."""
        up.idle = False
        conn = h11.Connection(h11.CLIENT)  # one per exchange: the upstream is between two
        try:
            data = conn.send(request)
            if first:
                data += conn.send(h11.Data(data=first))
            if read and down.their_state is h11.DONE:
                data += conn.send(h11.EndOfMessage())
            await up.stream.send(data)
        except (OSError, ConnectionError) as exc:
            await self._close_upstream()
            detail = f"sending the request failed: {exc}"
            await self._send_answer(ProxyAnswer(ErrorCode.UPSTREAM_UNREACHABLE, detail=detail))
            return False
        started = asyncio.Event()
        body = asyncio.create_task(self._send_body(down, up, conn))
        reply = asyncio.create_task(self._send_response(down, up, conn, started))
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
            if started.is_set() or isinstance(failure, _ClientGone):
                return False
            if isinstance(failure, _BadRequestBody):
                answer = ProxyAnswer(ErrorCode.INVALID_REQUEST, detail=str(failure))
            else:
                detail = _upstream_failure(failure)
                answer = ProxyAnswer(ErrorCode.UPSTREAM_UNREACHABLE, detail=detail)
            await self._send_answer(answer)
            return False
        if body.cancelled() or down.their_state is not h11.DONE:
            await self._close_upstream()
            return False
        trailing, _closed = down.trailing_data
        self._buffer[:0] = trailing
        self._end_exchange(up, conn)
        return down.our_state is h11.DONE and down.their_state is h11.DONE

    def _end_exchange(self, up: _Upstream, conn: h11.Connection) -> None:
        """Keep the upstream for the next request only if the exchange ended cleanly: both
        sides done, and nothing sent past the answer (bytes that would otherwise be read as
        the answer to the agent's next request)."""
        done = conn.our_state is h11.DONE and conn.their_state is h11.DONE
        if done and not conn.trailing_data[0]:
            up.idle = True
        else:
            self._upstream_dead()

    def _upstream_dead(self) -> None:
        if self._upstream is not None:
            stream = self._upstream.stream
            self._upstream = None
            task = asyncio.get_running_loop().create_task(stream.close())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _send_body(self, down: h11.Connection, up: _Upstream, conn: h11.Connection) -> None:
        idle = self._ctx.limits.idle_timeout
        while True:
            try:
                event = down.next_event()
            except h11.RemoteProtocolError as exc:
                raise _BadRequestBody(str(exc)) from exc
            if event is h11.NEED_DATA:
                try:
                    # A body that stops arriving must not hold the upstream connection.
                    async with asyncio.timeout(idle):
                        data = await self._client.recv()
                except TimeoutError:
                    raise _ClientGone("agent stalled during the request body") from None
                if not data:
                    raise _ClientGone("agent closed during the request body")
                down.receive_data(data)
                continue
            if isinstance(event, h11.Data):
                self._sent_up.inc(len(event.data))
                await up.stream.send(conn.send(h11.Data(data=event.data)))
            elif isinstance(event, h11.EndOfMessage):
                tail = conn.send(h11.EndOfMessage())
                if tail:
                    await up.stream.send(tail)
                return
            elif event is h11.PAUSED:
                return
            else:
                raise _BadRequestBody(f"unexpected {type(event).__name__} in request body")

    async def _send_response(
        self, down: h11.Connection, up: _Upstream, conn: h11.Connection, started: asyncio.Event
    ) -> None:
        # Output is gathered while the upstream's bytes parse without waiting, and written
        # when more must be read (or at the end): fewer writes, fewer wake-ups.
        pending = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if pending:
                    await self._client.send(bytes(pending))
                    pending.clear()
                conn.receive_data(await up.stream.recv())
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
                self._sent_down.inc(len(event.data))
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

    async def _refuse_unparsed(self, answer: ProxyAnswer, method: bytes = b"") -> None:
        """Record and answer a request refused before its head could be parsed."""
        outcome = refuse_unparsed(answer, self._arrival, self._ctx.policy, method)
        self._ctx.recorder.record(outcome)
        await self._answer(outcome)

    async def _answer(self, outcome: Refuse) -> None:
        facts = outcome.facts
        shown = f"{facts.host}:{facts.port}" if facts.host else ""
        await self._send_answer(outcome.answer, shown)

    async def _send_answer(self, answer: ProxyAnswer, shown: str = "") -> None:
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
    status = 431 if isinstance(exc, HeadTooLarge) else 0
    return ProxyAnswer(ErrorCode.INVALID_REQUEST, status=status, detail=str(exc))
