"""Which hosts may be spoken to in cleartext: loopback and in-cluster service names.

The same rule guards token endpoints (http only for these) and token injection into plain
HTTP requests (DESIGN §3.5 #3).
"""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """``localhost``, ``*.localhost``, 127.0.0.0/8, ``::1`` or an IPv4-mapped loopback."""
    value = host.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    lowered = value.lower()
    if lowered == "localhost" or lowered.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_in_cluster_host(host: str) -> bool:
    """``name.namespace.svc`` or ``name.namespace.svc.cluster.local`` (exactly)."""
    labels = host.strip().lower().rstrip(".").split(".")
    if any(not label for label in labels):
        return False
    if len(labels) == 3:
        return labels[2] == "svc"
    if len(labels) == 5:
        return labels[2:] == ["svc", "cluster", "local"]
    return False


def cleartext_allowed(host: str) -> bool:
    return is_loopback_host(host) or is_in_cluster_host(host)
