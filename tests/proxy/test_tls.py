"""The interception CA: key in memory only, leaves per host, bounded cache, real handshakes."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from grantbox.proxy import InterceptionCA
from grantbox.proxy.streams import SocketStream, TlsServerStream


def test_ca_certificate_is_a_constrained_ca_and_repr_hides_the_key() -> None:
    ca = InterceptionCA()
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert "PRIVATE" not in repr(ca) and "subject" in repr(ca)
    assert b"PRIVATE KEY" not in ca.cert_pem


def test_leaves_name_the_host_and_verify_against_the_ca() -> None:
    ca = InterceptionCA()
    for host, general in [
        ("alpha.example", x509.DNSName("alpha.example")),
        ("127.0.0.1", x509.IPAddress(ipaddress.ip_address("127.0.0.1"))),
    ]:
        leaf = ca.mint_leaf(host)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert list(san) == [general]
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.SERVER_AUTH in eku
        public = ca.certificate.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        leaf.verify_directly_issued_by(ca.certificate)


def test_contexts_are_cached_and_bounded() -> None:
    ca = InterceptionCA(leaf_cache_size=3)
    first = ca.server_context("a.example")
    assert ca.server_context("A.example") is first
    for name in ("b.example", "c.example", "d.example"):
        ca.server_context(name)
    assert ca.minted == 4
    assert ca.server_context("a.example") is not first  # evicted, minted again
    assert ca.minted == 5


async def test_a_client_trusting_the_ca_completes_a_handshake_with_alpn() -> None:
    ca = InterceptionCA()
    served: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]

    async def serve_one() -> None:
        sock, _ = await asyncio.get_running_loop().sock_accept(listener)
        inner = await SocketStream.accepted(sock)
        stream = TlsServerStream(inner, ca.server_context("alpha.example"))
        await stream.handshake()
        served.set_result(stream.alpn)
        data = await stream.recv()
        await stream.send(data.upper())
        await stream.close()

    server = asyncio.create_task(serve_one())
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ctx, server_hostname="alpha.example"
    )
    writer.write(b"hello")
    await writer.drain()
    assert await reader.read(100) == b"HELLO"
    assert await served == "http/1.1"
    writer.close()
    await server
    listener.close()
