"""Workload API endpoint addresses (SPIFFE Workload Endpoint §4)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"


def parse_socket_uri(value: str) -> str:
    """Return the absolute filesystem path of a unix Workload API endpoint.

    Accepts ``unix:/p``, ``unix:///p`` and a bare absolute path ``/p``; anything else (TCP,
    relative paths, an authority, a query or fragment) is a configuration error.
    """
    text = value.strip()
    if not text:
        raise ValueError("workload API socket is empty")
    if text.startswith("/"):
        path = text
    else:
        parts = urlsplit(text)
        if parts.scheme != "unix":
            raise ValueError(
                f"workload API socket must be a unix socket (unix:/path), got scheme "
                f"{parts.scheme or '(none)'!r}"
            )
        if parts.netloc:
            raise ValueError("workload API socket URI must not have an authority (unix:///path)")
        if parts.query or parts.fragment:
            raise ValueError("workload API socket URI must not have a query or fragment")
        path = parts.path
    if not path.startswith("/"):
        raise ValueError("workload API socket path must be absolute")
    if "\x00" in path:
        raise ValueError("workload API socket path must not contain NUL")
    return os.path.normpath(path)


def socket_from_environment(environ: dict[str, str] | None = None) -> str | None:
    """The path named by ``SPIFFE_ENDPOINT_SOCKET``, or None when it is unset or blank."""
    env = os.environ if environ is None else environ
    raw = env.get(ENDPOINT_ENV, "")
    return parse_socket_uri(raw) if raw.strip() else None
