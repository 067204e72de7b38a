"""Request heads read byte by byte before h11 sees them (DESIGN §3.5 #4).

h11 is strict, but it accepts a few things a credential-injecting proxy must not: a
Content-Length together with Transfer-Encoding (it silently prefers chunked), identical
duplicate Content-Length headers (it collapses them) and obsolete line folding (it joins
the lines). It also refuses ``Name : value`` outright, while the design requires that an
agent-sent copy of the injected header in that form be *removed*. So every request head
goes through :func:`parse_head` first: it refuses ambiguous framing and bad bytes, and
keeps enough of the raw form for :func:`serialize_head` to hand h11 a clean head.

Responses go the other way: :func:`response_head_end` and :func:`parse_response_head` read
the common upstream answer (HTTP/1.1, CRLF lines, one Content-Length, no Transfer-Encoding)
without h11, about ten times faster; they accept a strict subset of what h11 accepts (a
property test holds them to h11's reading), and anything outside it - chunked, 1xx, 204/304,
HTTP/1.0, bare LF, odd bytes - returns ``None`` and goes to h11 as before. So every answer
h11 would refuse is still refused, and every answer is read the way h11 reads it.
:func:`request_head_bytes` writes the request head that goes upstream.

Pure: bytes in, a :class:`RequestHead` or :class:`ResponseHead` (or :class:`FramingError`)
out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Largest request head (request line + headers) the proxy reads; larger → 431.
MAX_HEAD_BYTES = 64 * 1024
# Digits a Content-Length may have (h11's bound: more could overflow a peer's parser).
MAX_LENGTH_DIGITS = 20

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_METHOD = _TOKEN
_VERSION = re.compile(rb"HTTP/1\.[01]")
# A field value may hold visible ASCII, space, tab and obs-text; no other control bytes.
_BAD_VALUE_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Request targets: visible ASCII only.
_TARGET = re.compile(rb"[\x21-\x7e]+")

# The largest response head read without h11: h11's own bound on an incomplete event.
MAX_RESPONSE_HEAD = 16 * 1024
# The fast subset of h11's status line and header line (h11/_abnf.py): visible ASCII or
# obs-text in values, spaces and tabs only inside them; no other control byte anywhere.
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([0-9]{3}) ([\t\x20-\x7e\x80-\xff]*)")
#   field-line = token ":" [ \t]* value [ \t]*, the value visible ASCII or obs-text with
#   spaces and tabs only inside it: that is exactly a token, a colon, then nothing but
#   [\t\x20-\x7e\x80-\xff], the value being that rest stripped of spaces and tabs. So the
#   lines' bytes are checked together (once each CRLF is removed, a bare CR or LF is left
#   like any other control byte) and each name is a token; bytes.translate does both in C.
_FIELD_LINE_BYTES = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# What a request head sent upstream may hold besides its CRLF line ends.
_HEAD_BYTE_PROBLEM = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class FramingError(ValueError):
    """The head cannot be forwarded safely; the proxy answers 400 ``invalid_request``."""


class HeadTooLarge(FramingError):
    """The head is larger than :data:`MAX_HEAD_BYTES`; the proxy answers 431."""


@dataclass(frozen=True, slots=True)
class Field:
    """One header line. ``spaced`` records whitespace between the name and the colon."""

    name: bytes
    value: bytes
    spaced: bool = False
    lower: bytes = b""  # the name, lower-cased (filled in when empty)

    def __post_init__(self) -> None:
        if not self.lower:
            object.__setattr__(self, "lower", self.name.lower())


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes
    fields: tuple[Field, ...]

    def values(self, name: str) -> list[bytes]:
        key = name.lower().encode()
        return [f.value for f in self.fields if f.lower == key]

    def first(self, name: str) -> bytes | None:
        key = name.encode()
        for f in self.fields:
            if f.lower == key:
                return f.value
        return None

    def tokens(self, name: str) -> set[bytes]:
        """The comma-separated, lower-cased tokens of every ``name`` field."""
        found: set[bytes] = set()
        for value in self.values(name):
            found.update(t.strip().lower() for t in value.split(b",") if t.strip())
        return found


def find_head_end(buffer: bytes | bytearray) -> int:
    """Index just past the blank line ending the head, or -1 when it has not arrived.

    Raises :class:`HeadTooLarge` once the buffer holds more than the limit without one.
    """
    index = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if index >= 0:
        return index + 4
    if len(buffer) > MAX_HEAD_BYTES:
        raise HeadTooLarge(f"request head larger than {MAX_HEAD_BYTES} bytes")
    return -1


def _parse_field(line: bytes) -> Field:
    if line[:1] in (b" ", b"\t"):
        raise FramingError("obsolete line folding is not accepted")
    if b"\r" in line or b"\n" in line:
        raise FramingError("bare CR or LF inside a header line")
    name, colon, value = line.partition(b":")
    if not colon:
        raise FramingError("header line without a colon")
    stripped = name.rstrip(b" \t")
    if not _TOKEN.fullmatch(stripped):
        raise FramingError("invalid header name")
    value = value.strip(b" \t")
    if _BAD_VALUE_BYTE.search(value):
        raise FramingError("control byte (NUL, CR, LF or other) in a header value")
    return Field(stripped, value, stripped != name, stripped.lower())


def _parse_clean_field(line: bytes) -> Field:
    """:func:`_parse_field` for a line known to hold no control byte but HTAB (so no CR,
    LF or bad value byte): the same answers, without the checks that cannot fail."""
    if line[:1] in (b" ", b"\t"):
        raise FramingError("obsolete line folding is not accepted")
    name, colon, value = line.partition(b":")
    if not colon:
        raise FramingError("header line without a colon")
    stripped = name.rstrip(b" \t")
    if not stripped or stripped.translate(None, _TOKEN_BYTES):
        raise FramingError("invalid header name")
    return Field(stripped, value.strip(b" \t"), stripped != name, stripped.lower())


def _check_framing(fields: tuple[Field, ...], version: bytes) -> None:
    lengths = [f for f in fields if f.lower == b"content-length"]
    codings = [f for f in fields if f.lower == b"transfer-encoding"]
    if len(lengths) > 1:
        raise FramingError("more than one Content-Length header")
    if lengths and codings:
        raise FramingError("Content-Length together with Transfer-Encoding")
    if lengths and not lengths[0].value.isdigit():
        raise FramingError("Content-Length is not a decimal number")
    if lengths and len(lengths[0].value) > MAX_LENGTH_DIGITS:
        raise FramingError("Content-Length is too long")
    if len(codings) > 1 or (codings and codings[0].value.lower() != b"chunked"):
        raise FramingError("Transfer-Encoding other than a single 'chunked'")
    if codings and version == b"HTTP/1.0":
        # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        raise FramingError("Transfer-Encoding in an HTTP/1.0 request")
    if len([f for f in fields if f.lower == b"host"]) > 1:
        raise FramingError("more than one Host header")


def parse_head(raw: bytes) -> RequestHead:
    """Parse one request head (ending in CRLF CRLF) strictly."""
    if len(raw) > MAX_HEAD_BYTES + 4:
        raise HeadTooLarge(f"request head larger than {MAX_HEAD_BYTES} bytes")
    if not raw.endswith(b"\r\n\r\n"):
        raise FramingError("request head does not end with CRLF CRLF")
    lines = raw[:-4].split(b"\r\n")
    request_line = lines[0]
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise FramingError("malformed request line")
    method, target, version = parts
    if not _METHOD.fullmatch(method):
        raise FramingError("invalid method")
    if not _TARGET.fullmatch(target):
        raise FramingError("invalid request target")
    if not _VERSION.fullmatch(version):
        raise FramingError("unsupported HTTP version")
    # Header lines free of control bytes (the common case, checked for all at once) skip
    # the per-line checks that cannot fail; any other head is read line by line as before.
    block = raw[len(request_line) + 2 : -4]
    parse = _parse_field
    if not block.replace(b"\r\n", b"").translate(None, _FIELD_LINE_BYTES):
        parse = _parse_clean_field
    fields = tuple(parse(line) for line in lines[1:])
    _check_framing(fields, version)
    return RequestHead(method, target, version, fields)


def serialize_head(head: RequestHead, *, drop: str | None = None) -> bytes:
    """The head as h11 should read it: normalised lines, and without the fields named
    ``drop`` (the injected header, in every spelling the agent sent).

    A ``Name : value`` field that is not being dropped is refused: RFC 9112 §5.1 says a
    server must reject it, and forwarding it would let two parsers read two headers.
    """
    key = drop.lower().encode() if drop else None
    lines = [b" ".join((head.method, head.target, head.version))]
    for field in head.fields:
        if key is not None and field.lower == key:
            continue
        if field.spaced:
            raise FramingError("whitespace between a header name and its colon")
        lines.append(field.name + b": " + field.value)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def request_head_bytes(
    method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> bytes:
    """The HTTP/1.1 request head sent upstream, written in one piece.

    Every part was checked already (the agent's fields by :func:`parse_head`, the target by
    the flow, the injected header by the token68 and header-name checks); a last look at
    the whole head refuses a stray CR, LF or control byte anyway, so no part can ever add
    a line.
    """
    lines = [b"%s %s HTTP/1.1" % (method, target)]
    lines.extend(name + b": " + value for name, value in headers)
    if _HEAD_BYTE_PROBLEM.search(b"".join(lines)):  # one search: a bad byte in any line
        raise FramingError("control byte in a request head sent upstream")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """An upstream's response head in the fast subset: its body is ``length`` bytes."""

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    length: int
    close: bool  # the upstream said ``Connection: close``


def response_head_end(buffer: bytes | bytearray) -> int:
    """Index just past a response head ending in CRLF CRLF; 0 while more bytes are needed;
    -1 when the head is not for the fast path (a bare LF ends it first, or it is longer
    than :data:`MAX_RESPONSE_HEAD`): h11 reads it instead."""
    crlf = buffer.find(b"\n\r\n", 0, MAX_RESPONSE_HEAD)
    bare = buffer.find(b"\n\n", 0, MAX_RESPONSE_HEAD)
    if crlf > 0 and buffer[crlf - 1] == 0x0D and (bare < 0 or bare > crlf):
        return crlf + 3
    if bare >= 0 or crlf >= 0 or len(buffer) >= MAX_RESPONSE_HEAD:
        return -1
    return 0


def parse_response_head(raw: bytes) -> ResponseHead | None:
    """``raw`` (a head ending in CRLF CRLF) read as h11 would read it, or ``None`` when it
    is outside the fast subset (then h11 must read it, and may refuse it)."""
    # (A bare CR or LF anywhere leaves the head to h11.)
    lines = raw[:-4].split(b"\r\n")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        return None
    code = int(status.group(1))
    if code < 200 or code in (204, 304):
        return None
    block = raw[len(lines[0]) + 2 : -4]
    if block.replace(b"\r\n", b"").translate(None, _FIELD_LINE_BYTES):
        return None  # a control byte, or a bare CR or LF
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    close = False
    for line in lines[1:]:
        name, colon, rest = line.partition(b":")
        if not colon or not name or name.translate(None, _TOKEN_BYTES):
            return None
        value = rest.strip(b" \t")
        lower = name.lower()
        if lower == b"content-length":
            if length is not None or not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
                return None
            length = int(value)
        elif lower == b"transfer-encoding":
            return None
        elif lower == b"connection":
            close = close or b"close" in (t.strip().lower() for t in value.split(b","))
        headers.append((name, value))
    if length is None:
        return None
    return ResponseHead(code, status.group(2), tuple(headers), length, close)
