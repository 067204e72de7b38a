"""Header rewriting between the agent and the upstream: pure functions over header lists.

The request that goes upstream is the agent's, minus hop-by-hop and proxy headers, with
``Host`` set to the authority the policy admitted, every agent copy of the injected header
removed (case-insensitively) and the injected header appended exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

Headers = list[tuple[bytes, bytes]]

# Headers that describe one hop and never travel further (RFC 9110 §7.6.1), plus the
# proxy's own. Upgrade is dropped too: the relay speaks HTTP/1.1 request/response only.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
    }
)

# What a Connection header may not make hop-by-hop: the message's own framing and Host.
# (``Connection: content-length`` would otherwise send a POST head upstream without its
# body's length, so the upstream runs a bodiless request while the agent gets a 502.)
NEVER_HOP_BY_HOP = frozenset({b"content-length", b"transfer-encoding", b"host"})

# Never shown in events or logs.
SENSITIVE = frozenset(
    {b"authorization", b"proxy-authorization", b"cookie", b"set-cookie", b"x-api-key"}
)
REDACTED = b"[REDACTED]"


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens - NEVER_HOP_BY_HOP


def strip_hop_by_hop(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """Drop hop-by-hop headers and any header the Connection header names."""
    named = _connection_tokens(headers)
    return [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP and n.lower() not in named]


def upstream_request_headers(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    host: bytes,
    inject: tuple[str, str] | Sequence[tuple[str, str]] | None = None,
) -> Headers:
    """The header list to send upstream.

    ``host`` replaces the agent's Host (the proxy forwards to the admitted authority, never
    to whatever Host said). ``inject`` is ``(name, value)`` of a credential header, or a
    list of them (several credentials, each in its own header); every agent copy of an
    injected header is removed, and each is appended once.
    """
    pairs = [] if inject is None else [inject] if isinstance(inject, tuple) else list(inject)
    # One pass: hop-by-hop headers, those Connection names, the agent's Host and every
    # agent copy of an injected header go; the rest keep their order after the new Host.
    drop = HOP_BY_HOP | _connection_tokens(headers) | _HOST
    if pairs:
        drop |= {name.lower().encode("ascii") for name, _ in pairs}
    out: Headers = [(b"Host", host)]
    out.extend((n, v) for n, v in headers if n.lower() not in drop)
    for name, value in pairs:
        out.append((name.encode("ascii"), value.encode("utf-8")))
    return out


_HOST = frozenset({b"host"})


# Control bytes other than HTAB: h11 lets them through in field values, the agent's client
# might not read them the way the proxy did.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class UnsafeResponse(ValueError):
    """The upstream's response head cannot be passed on unambiguously."""


def downstream_response_headers(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """The upstream's response headers as the agent receives them.

    Raises :class:`UnsafeResponse` for a value with control bytes (the proxy answers 502).
    """
    for name, value in headers:
        if _CONTROL.search(value):
            raise UnsafeResponse(f"control byte in the upstream's {name.decode('latin-1')} header")
    return strip_hop_by_hop(headers)


def redact(headers: Iterable[tuple[bytes, bytes]], extra: Iterable[str] = ()) -> list[list[str]]:
    """Headers as events may show them: sensitive values (and ``extra`` names) redacted."""
    hidden = SENSITIVE | {e.lower().encode() for e in extra}
    return [
        [
            n.decode("latin-1"),
            (REDACTED if n.lower() in hidden else v).decode("latin-1"),
        ]
        for n, v in headers
    ]


class ResponseFraming:
    """How a relayed response is framed for the agent, the way h11 would frame it.

    The upstream's response was parsed by h11 (its body arrives as decoded data); this
    writes it again for an HTTP/1.1 agent: a body of known length keeps its Content-Length,
    any other body is chunked (Transfer-Encoding wins over Content-Length, as h11 read it),
    and ``Connection: close`` is added when the agent asked to close. Pure bytes out.
    """

    __slots__ = ("chunked",)

    def __init__(self) -> None:
        self.chunked = False

    def head(
        self, status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]], *, close: bool
    ) -> bytes:
        lowered = [name.lower() for name, _ in headers]
        out = list(headers)
        has_body = not (status < 200 or status in (204, 304))
        if has_body and (b"transfer-encoding" in lowered or b"content-length" not in lowered):
            self.chunked = True
            out = [(n, v) for n, v in out if n.lower() not in _FRAMING]
            out.append((b"Transfer-Encoding", b"chunked"))
        if close:
            out = [(n, v) for n, v in out if n.lower() != b"connection"]
            out.append((b"Connection", b"close"))
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        lines.extend(b"%s: %s\r\n" % (name, value) for name, value in out)
        lines.append(b"\r\n")
        return b"".join(lines)

    def data(self, data: bytes) -> bytes:
        if not self.chunked:
            return data
        if not data:
            return b""
        return b"%x\r\n%s\r\n" % (len(data), data)

    def end(self) -> bytes:
        return b"0\r\n\r\n" if self.chunked else b""


_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


def relayed_head(
    status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]], *, close: bool
) -> bytes:
    """The agent's head for an answer read on the fast path (values free of control bytes,
    a Content-Length body): what ``ResponseFraming().head`` writes for
    :func:`downstream_response_headers`, in one pass."""
    lowered = [name.lower() for name, _ in headers]
    drop = HOP_BY_HOP
    if b"connection" in lowered:
        named = _connection_tokens(headers)
        if not named <= _PLAIN_CONNECTION:
            drop = HOP_BY_HOP | named
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for (name, value), lower in zip(headers, lowered, strict=True):
        if lower not in drop:
            lines.append(b"%s: %s\r\n" % (name, value))
    if close:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


# Connection tokens that name no other header (nothing more to drop).
_PLAIN_CONNECTION = HOP_BY_HOP | {b"close"}
