"""Where a request goes: the request target and the tunnel it arrived in, made concrete.

Pure. A forward (non-tunnel) connection carries absolute-form ``http://`` targets; inside a
CONNECT tunnel requests are origin-form and their Host must name the tunnel's host, so an
agent cannot CONNECT to one host and address its requests to another.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, urlsplit

from .framing import FramingError, RequestHead

Scheme = Literal["http", "https"]


@dataclass(frozen=True, slots=True)
class Tunnel:
    """A CONNECT tunnel the relay serves: its target and whether TLS was terminated."""

    host: str
    port: int
    scheme: Scheme


@dataclass(frozen=True, slots=True)
class RequestTarget:
    scheme: Scheme
    host: str  # lower-case; IPv6 without brackets
    port: int
    target: str  # origin-form: path plus query
    authority: str  # what the upstream's Host header says

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


def _authority(host: str, port: int, scheme: Scheme) -> str:
    shown = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return shown if port == default else f"{shown}:{port}"


@functools.lru_cache(maxsize=1024)
def _valid_host(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-._")
    return all(c in allowed for c in host) and all(host.rstrip(".").split("."))


def split_authority(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) into a lower-case host and a port."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise FramingError("unterminated IPv6 literal in authority")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise FramingError("malformed authority")
        port_text = rest[1:] if rest else ""
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise FramingError("invalid IPv6 literal in authority") from exc
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not port_text:
        if default_port is None:
            raise FramingError("authority has no port")
        port = default_port
    else:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise FramingError("invalid port in authority")
        port = int(port_text)
    host = host.lower()
    if not _valid_host(host) or "@" in text:
        raise FramingError("invalid host in authority")
    return host, port


def _urlsplit(raw: str) -> SplitResult:
    try:
        return urlsplit(raw)
    except ValueError as exc:  # e.g. an unterminated '[' in the authority
        raise FramingError(f"malformed request target: {exc}") from exc


def connect_target(head: RequestHead) -> tuple[str, int]:
    """The ``host:port`` of a CONNECT request."""
    return split_authority(head.target.decode("ascii"))


def request_target(head: RequestHead, tunnel: Tunnel | None) -> RequestTarget:
    """Resolve a request's destination, or raise :class:`FramingError`."""
    raw = head.target.decode("ascii")
    host_header = head.first("host")
    if tunnel is None:
        if not raw.lower().startswith("http://"):
            if raw.lower().startswith("https://"):
                raise FramingError("https:// targets must use CONNECT")
            raise FramingError("a proxy request needs an absolute http:// target")
        parts = _urlsplit(raw)
        if "@" in parts.netloc or not parts.netloc:
            raise FramingError("userinfo or empty authority in the request target")
        host, port = split_authority(parts.netloc, 80)
        path = parts.path or "/"
        if not path.startswith("/"):
            raise FramingError("request path must start with '/'")
        target = path + (f"?{parts.query}" if parts.query else "")
        return RequestTarget("http", host, port, target, _authority(host, port, "http"))

    if raw.startswith("/"):
        target = raw.split("#", 1)[0]
    elif raw.lower().startswith(f"{tunnel.scheme}://"):
        parts = _urlsplit(raw)
        host, port = split_authority(parts.netloc, 443 if tunnel.scheme == "https" else 80)
        if (host, port) != (tunnel.host, tunnel.port):
            raise FramingError("request target names a different host than the tunnel")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    else:
        raise FramingError("unsupported request target form inside a tunnel")
    if host_header is None:
        raise FramingError("missing Host header")
    # A Host without a port means the tunnel's port; an explicit one must be the same.
    h_host, h_port = split_authority(host_header.decode("latin-1"), tunnel.port)
    if (h_host, h_port) != (tunnel.host, tunnel.port):
        raise FramingError("Host header names a different host than the tunnel")
    return RequestTarget(
        tunnel.scheme,
        tunnel.host,
        tunnel.port,
        target,
        _authority(tunnel.host, tunnel.port, tunnel.scheme),
    )
