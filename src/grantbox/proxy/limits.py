"""Every timeout and bound of one proxy, in one value.

A proxy is given a :class:`Limits` (tests pass short deadlines and small caps; nothing is
read from module globals at run time). :func:`connection_cap` is the one piece of I/O here:
it raises the descriptor limit as far as the process may and works out how many agent
connections fit while leaving descriptors for the process's own work (a supervisor's
gateway connections, log files, the identity socket).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# Descriptors one agent connection may hold at once: its own socket and one upstream.
DESCRIPTORS_PER_CONNECTION = 2
# What an unlimited descriptor limit counts as.
_UNBOUNDED = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    """Deadlines (seconds) and bounds of one proxy.

    ``idle_timeout``: a kept-alive agent connection waiting for its next request, or an
    agent that stopped sending a request body. ``head_timeout``: one request head, once its
    first byte has arrived (slowloris bound). ``max_connections``: agent connections served
    at once; more are answered ``connection_limit_reached`` and closed.
    ``reserved_descriptors``: kept free for the rest of the process whatever the cap says.
    ``event_buffer``: OCSF events waiting for a slow sink before new ones are dropped.
    ``credential_body_max``: request body bytes read (before dialling) and searched for
    stored-credential placeholders when the sandbox has any; a larger body to an endpoint
    with ``credential_body_rewrite`` is refused, elsewhere only this much of it is searched.
    """

    dial_timeout: float = 10.0
    resolve_timeout: float = 10.0
    idle_timeout: float = 300.0
    head_timeout: float = 30.0
    handshake_timeout: float = 30.0
    max_connections: int = 4096
    reserved_descriptors: int = 256
    leaf_cache_size: int = 512
    event_buffer: int = 10_000
    credential_body_max: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("dial_timeout", "resolve_timeout", "idle_timeout", "head_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.handshake_timeout <= 0:
            raise ValueError("handshake_timeout must be positive")
        for name in ("max_connections", "leaf_cache_size", "event_buffer", "credential_body_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.reserved_descriptors < 0:
            raise ValueError("reserved_descriptors must not be negative")


def cap_for(descriptors: int, limits: Limits) -> int:
    """Agent connections that fit in ``descriptors`` after the reserve (at least 1)."""
    spare = max(0, descriptors - limits.reserved_descriptors)
    return max(1, min(limits.max_connections, spare // DESCRIPTORS_PER_CONNECTION))


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        target = hard if hard != resource.RLIM_INFINITY else _UNBOUNDED
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else _UNBOUNDED


def connection_cap(limits: Limits) -> int:
    """The connection cap for this process, after raising its descriptor limit."""
    return cap_for(raise_descriptor_limit(), limits)
