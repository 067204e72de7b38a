"""Request targets and tunnels made concrete (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.proxy.framing import FramingError, parse_head
from grantbox.proxy.targets import Tunnel, connect_target, request_target, split_authority


def _head(target: str, host: str | None = "alpha.example") -> bytes:
    extra = f"Host: {host}\r\n" if host is not None else ""
    return f"GET {target} HTTP/1.1\r\n{extra}\r\n".encode()


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("Alpha.Example:443", None, ("alpha.example", 443)),
        ("alpha.example", 80, ("alpha.example", 80)),
        ("[::1]:8443", None, ("::1", 8443)),
        ("[::1]", 443, ("::1", 443)),
        ("127.0.0.1:1", None, ("127.0.0.1", 1)),
    ],
)
def test_split_authority(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split_authority(text, default) == expected


@pytest.mark.parametrize(
    "text",
    [
        "alpha.example",
        "alpha.example:0",
        "alpha.example:70000",
        "alpha:x",
        "[::1",
        "[zz]:1",
        "a b:1",
        "user@alpha.example:443",
        "alpha..example:443",
        ":443",
        "alpha:\u00b2",  # a digit to str.isdigit, not to int()
    ],
)
def test_bad_authorities(text: str) -> None:
    with pytest.raises(FramingError):
        split_authority(text)


def test_connect_target() -> None:
    head = parse_head(b"CONNECT alpha.example:443 HTTP/1.1\r\nHost: alpha.example:443\r\n\r\n")
    assert connect_target(head) == ("alpha.example", 443)


def test_absolute_form_on_a_forward_connection() -> None:
    target = request_target(parse_head(_head("http://Alpha.Example:8080/a/b?x=1#frag")), None)
    assert (target.scheme, target.host, target.port) == ("http", "alpha.example", 8080)
    assert (target.target, target.path, target.authority) == (
        "/a/b?x=1",
        "/a/b",
        "alpha.example:8080",
    )
    default = request_target(parse_head(_head("http://[::1]")), None)
    assert (default.host, default.port, default.target, default.authority) == (
        "::1",
        80,
        "/",
        "[::1]",
    )


@pytest.mark.parametrize(
    "target", ["/origin", "https://alpha.example/", "http://u:p@alpha.example/", "http:///x", "*"]
)
def test_forward_connections_need_absolute_http(target: str) -> None:
    with pytest.raises(FramingError):
        request_target(parse_head(_head(target)), None)


def test_tunnel_requests_take_host_and_port_from_the_tunnel() -> None:
    tunnel = Tunnel("alpha.example", 8443, "https")
    target = request_target(parse_head(_head("/v1?q", "alpha.example:8443")), tunnel)
    assert (target.scheme, target.host, target.port, target.target) == (
        "https",
        "alpha.example",
        8443,
        "/v1?q",
    )
    assert target.authority == "alpha.example:8443"
    # a Host without a port means the tunnel's port
    assert request_target(parse_head(_head("/", "ALPHA.example")), tunnel).host == "alpha.example"
    absolute = request_target(parse_head(_head("https://alpha.example:8443/z")), tunnel)
    assert absolute.target == "/z"


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("/x", "beta.example"),
        ("/x", "alpha.example:443"),
        ("/x", None),
        ("https://beta.example:8443/x", "alpha.example"),
        ("http://alpha.example:8443/x", "alpha.example"),
        ("*", "alpha.example"),
    ],
)
def test_tunnel_requests_cannot_address_another_host(target: str, host: str | None) -> None:
    with pytest.raises(FramingError):
        request_target(parse_head(_head(target, host)), Tunnel("alpha.example", 8443, "https"))


_PREFIXES = [b"", b"/", b"http://", b"http://alpha.example:", b"https://alpha.example", b"http://["]


@given(
    target=st.builds(bytes.__add__, st.sampled_from(_PREFIXES), st.binary(min_size=1, max_size=20)),
    host=st.builds(
        bytes.__add__,
        st.sampled_from([b"", b"alpha.example", b"alpha.example:"]),
        st.binary(max_size=8),
    ),
    tunnel=st.sampled_from([None, Tunnel("alpha.example", 443, "https")]),
)
def test_any_head_either_routes_or_is_a_framing_error(
    target: bytes, host: bytes, tunnel: Tunnel | None
) -> None:
    raw = b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    try:
        routed = request_target(parse_head(raw), tunnel)
    except FramingError:
        return
    assert routed.target.startswith("/")
    if tunnel is not None:
        assert (routed.host, routed.port) == (tunnel.host, tunnel.port)
