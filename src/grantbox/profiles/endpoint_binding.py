"""What every endpoint-bound credential entry shares: its identity and how it matches.

Token grants (:class:`~.bindings.GrantBinding`) and stored credentials
(:class:`~.static.StaticBinding`) are bound to endpoints the same way, so the proxy picks
among either kind with one notion of "matches" and "more specific".
"""

from __future__ import annotations

from .patterns import (
    HostPattern,
    PathPattern,
    host_matches,
    host_specificity,
    parse_host_pattern,
    parse_path_pattern,
    path_matches,
    path_specificity,
)


class EndpointBinding:
    """Mixin for frozen dataclasses with ``provider``, ``credential``, ``host``, ``port`` and
    ``path`` fields (adds no slots of its own)."""

    __slots__ = ()

    provider: str
    credential: str
    host: str
    port: int
    path: str

    @property
    def id(self) -> str:
        """Stable, human-readable identity: ``provider:credential@host:port/path``."""
        return f"{self.provider}:{self.credential}@{self.host}:{self.port}{self.path or '/**'}"

    @property
    def owner(self) -> str:
        return f"{self.provider}:{self.credential}"

    @property
    def host_pattern(self) -> HostPattern:
        return parse_host_pattern(self.host)

    @property
    def path_pattern(self) -> PathPattern:
        return parse_path_pattern(self.path)

    @property
    def selector(self) -> tuple[str, int, str]:
        return (self.host, self.port, self.path)

    def specificity(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Larger is more specific; a concrete path beats any host-only binding."""
        return (path_specificity(self.path_pattern), host_specificity(self.host_pattern))

    def matches(self, host: str, port: int, path: str) -> bool:
        return (
            port == self.port
            and host_matches(self.host_pattern, host)
            and path_matches(self.path_pattern, path)
        )
