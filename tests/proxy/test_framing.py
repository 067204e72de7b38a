"""Request heads are checked byte by byte before h11 sees them."""

from __future__ import annotations

import h11
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from grantbox.proxy.framing import (
    MAX_HEAD_BYTES,
    FramingError,
    HeadTooLarge,
    _check_framing,
    _parse_clean_field,
    _parse_field,
    find_head_end,
    parse_head,
    serialize_head,
)

OK = b"POST /v1/x?q=1 HTTP/1.1\r\nHost: alpha.example\r\nContent-Length: 2\r\n\r\n"


def test_a_plain_head_parses() -> None:
    head = parse_head(OK)
    assert (head.method, head.target, head.version) == (b"POST", b"/v1/x?q=1", b"HTTP/1.1")
    assert head.first("host") == b"alpha.example"
    assert head.values("CONTENT-LENGTH") == [b"2"]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "more than one Content-Length",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "more than one Content-Length",
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", "decimal"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "chunked"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            "chunked",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n", "folding"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n\ttwo\r\n\r\n", "folding"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", "control byte"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\nb\r\n\r\n", "bare CR or LF"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", "bare CR or LF"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7fb\r\n\r\n", "control byte"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", "invalid header name"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n", "without a colon"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host"),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "request line"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "version"),
        (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", "method"),
        (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", "target"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n", "CRLF CRLF"),
    ],
)
def test_ambiguous_or_bad_heads_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(FramingError, match=why):
        parse_head(raw)


def test_h11_alone_would_accept_what_we_refuse() -> None:
    """The reason this module exists: h11 reads these heads without complaint."""
    for raw in (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n",
    ):
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(raw)
        assert isinstance(conn.next_event(), h11.Request)
        with pytest.raises(FramingError):
            parse_head(raw)


def test_whitespace_before_colon_is_recorded_and_only_dropping_it_is_allowed() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization : stale\r\nauthorization: again\r\n\r\n"
    head = parse_head(raw)
    assert [f.spaced for f in head.fields] == [False, True, False]
    assert serialize_head(head, drop="Authorization") == b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    with pytest.raises(FramingError, match="whitespace between a header name"):
        serialize_head(head)
    with pytest.raises(FramingError, match="whitespace between a header name"):
        serialize_head(head, drop="X-Api-Key")


def test_serialize_normalises_and_keeps_order() -> None:
    head = parse_head(b"GET /a HTTP/1.1\r\nHost:a\r\nX-B:   two  \r\nX-A: one\r\n\r\n")
    assert serialize_head(head) == b"GET /a HTTP/1.1\r\nHost: a\r\nX-B: two\r\nX-A: one\r\n\r\n"


def test_head_end_and_size_limit() -> None:
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY") == 27
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n") == -1
    big = b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES
    with pytest.raises(HeadTooLarge):
        find_head_end(big)
    with pytest.raises(HeadTooLarge):
        parse_head(big + b"\r\n\r\n")


@given(st.binary(max_size=40))
def test_any_accepted_value_is_free_of_control_bytes(value: bytes) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-V: " + value + b"\r\n\r\n"
    try:
        head = parse_head(raw)
    except FramingError:
        return
    (got,) = head.values("x-v")
    assert not any(b < 0x20 and b != 0x09 for b in got) and 0x7F not in got
    # what we hand h11 is something h11 accepts and reads back identically
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(serialize_head(head))
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert dict(event.headers).get(b"x-v", b"") == got


_LINE_BYTES = st.sampled_from([b"a", b"Z", b"-", b":", b" ", b"\t", b"(", b"\x80", b"\xff", b"1"])


@given(st.lists(st.lists(_LINE_BYTES, max_size=10).map(b"".join), max_size=5))
@example([b"X-A: v\t", b"B:\t", b"Name :x"])
@example([b"Bad Name: x", b" fold: x"])
@example([b"nocolon"])
@example([b": empty name"])
def test_clean_header_lines_read_as_the_line_by_line_reader_reads_them(lines: list[bytes]) -> None:
    """Heads whose header lines hold no control byte take a shorter way through
    parse_head; it must give the same fields, and refuse with the same error, as the
    line-by-line checks every other head goes through."""
    for line in lines:
        try:
            expected: object = _parse_field(line)
        except FramingError as exc:
            expected = str(exc)
        try:
            got: object = _parse_clean_field(line)
        except FramingError as exc:
            got = str(exc)
        assert got == expected
    raw = b"GET / HTTP/1.1\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    try:
        fields: object = parse_head(raw).fields
    except FramingError as exc:
        fields = str(exc)
    try:
        slow: object = tuple(_parse_field(line) for line in lines)
        _check_framing(slow, b"HTTP/1.1")  # type: ignore[arg-type]
    except FramingError as exc:
        slow = str(exc)
    assert fields == slow
