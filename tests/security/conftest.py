"""Attack tests reuse the proxy tests' real parts: loopback upstreams (plain and TLS)."""

from tests.proxy.conftest import (  # noqa: F401 (pytest fixtures)
    LOOPBACK,
    plain_upstream,
    tls_upstream,
    upstream_ca,
    upstream_ca_file,
)
