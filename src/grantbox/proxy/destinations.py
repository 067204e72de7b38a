"""Where the proxy may connect: name resolution it controls, and address validation.

The proxy resolves names itself and dials only addresses it validated in the same step
(DESIGN §3.5 #6), so a name that resolves to an allowed address once and to a metadata
address later is refused the second time instead of being dialled.

:func:`address_problem` and :func:`validate_addresses` are pure; :class:`SystemResolver`
is the only I/O here and is injectable (tests replace it to simulate DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata services: refused whatever the policy says.
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)
_LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
# IPv6 ranges that carry an IPv4 address a gateway may forward to: NAT64 (RFC 6052 well-known
# prefix) and the deprecated IPv4-compatible form. 6to4 and Teredo are decoded by ipaddress.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class ResolveError(OSError):
    """The name did not resolve."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]: ...


def _canonical(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64, 6to4, Teredo or IPv4-compatible IPv6 address leads to."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def always_refused(address: IPAddress) -> str | None:
    """Addresses no policy can open: metadata, link-local, unspecified, multicast - also
    when an IPv6 address only wraps such an IPv4 address (or loopback)."""
    address = _canonical(address)
    inner = embedded_ipv4(address)
    if inner is not None:
        problem = always_refused(inner)
        if problem is None and inner.is_loopback:
            problem = f"{inner} is loopback"
        if problem is not None:
            return f"{address} wraps {inner}: {problem}"
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if address in _LINK_LOCAL_V4 or address in _LINK_LOCAL_V6 or address.is_link_local:
        return f"{address} is link-local"
    if address.is_unspecified:
        return f"{address} is unspecified"
    if address.is_multicast or address == _BROADCAST:
        return f"{address} is multicast or broadcast"
    return None


def parse_allowed_ips(allowed_ips: Iterable[str | Network]) -> tuple[Network, ...]:
    return tuple(
        value
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network)
        else ipaddress.ip_network(value, strict=False)
        for value in allowed_ips
    )


def address_problem(address: IPAddress, allowed_ips: Sequence[str | Network]) -> str | None:
    """Why the proxy may not dial ``address`` for an endpoint, or ``None`` when it may.

    Loopback only when ``allowed_ips`` lists it; with ``allowed_ips`` set, only addresses
    inside one of them; link-local and metadata addresses never. ``allowed_ips`` may be
    given as text or as networks already parsed (the compiled policy's).
    """
    refused = always_refused(address)
    if refused is not None:
        return refused
    address = _canonical(address)
    networks = [n for n in parse_allowed_ips(allowed_ips) if n.version == address.version]
    containing = [n for n in networks if address in n]
    if allowed_ips and not containing:
        return f"{address} is not in the endpoint's allowed_ips"
    # Loopback must be listed as loopback: "0.0.0.0/0" means any address, not the host's own
    # services.
    if address.is_loopback and not any(_is_loopback_network(n) for n in containing):
        return f"{address} is loopback and the endpoint does not list it in allowed_ips"
    return None


def _is_loopback_network(network: Network) -> bool:
    return network.network_address.is_loopback and network.broadcast_address.is_loopback


def validate_addresses(
    addresses: Sequence[IPAddress], allowed_ips: Sequence[str | Network]
) -> tuple[tuple[IPAddress, ...], str | None]:
    """The addresses that may be dialled, or ``((), why)`` when none may.

    An answer containing any always-refused address (metadata, link-local…) is refused as a
    whole: it is the signature of a rebinding or poisoning attempt. Loopback or addresses
    outside ``allowed_ips`` are filtered out, so ``localhost`` answering both 127.0.0.1 and
    ::1 still works when only one is listed.
    """
    if not addresses:
        return (), "the name resolved to no address"
    for address in addresses:
        refused = always_refused(address)
        if refused is not None:
            return (), refused
    networks = parse_allowed_ips(allowed_ips)
    usable: list[IPAddress] = []
    first_problem = ""
    for address in addresses:
        problem = address_problem(address, networks)
        if problem is None:
            if address not in usable:
                usable.append(address)
        elif not first_problem:
            first_problem = problem
    if not usable:
        return (), first_problem
    return tuple(usable), None


def parse_overrides(items: Iterable[str]) -> dict[str, tuple[IPAddress, ...]]:
    """``HOST=IP`` (repeatable, also ``HOST=IP1,IP2``) into a lookup table."""
    table: dict[str, list[IPAddress]] = {}
    for item in items:
        host, sep, value = item.partition("=")
        if not sep or not host.strip() or not value.strip():
            raise ValueError(f"--resolve expects HOST=IP, got {item!r}")
        for part in value.split(","):
            table.setdefault(host.strip().lower().rstrip("."), []).append(
                ipaddress.ip_address(part.strip().strip("[]"))
            )
    return {host: tuple(addresses) for host, addresses in table.items()}


_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


class SystemResolver:
    """System DNS, with ``--resolve`` overrides and ``*.localhost`` answered locally."""

    def __init__(self, overrides: Mapping[str, Sequence[IPAddress]] | None = None) -> None:
        self._overrides = {k.lower().rstrip("."): tuple(v) for k, v in (overrides or {}).items()}

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        name = host.strip("[]").lower().rstrip(".")
        try:
            return (ipaddress.ip_address(name),)
        except ValueError:
            pass
        if name in self._overrides:
            return self._overrides[name]
        if name == "localhost" or name.endswith(".localhost"):
            return _LOOPBACK
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ResolveError(f"{name} does not resolve: {exc.strerror}") from exc
        out: list[IPAddress] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            if address not in out:
                out.append(address)
        return tuple(out)
