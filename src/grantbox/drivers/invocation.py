"""How a compute driver starts ``grantbox supervisor run``: one builder for every driver.

The local driver runs it as a process and the Kubernetes driver as a pod's container
command; both describe the supervisor with one :class:`SupervisorInvocation` so the two
command lines cannot drift apart, and neither ever carries a secret (the token is in a file
the supervisor reads; the identity socket is a path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grantbox.identity.socket_uri import ENDPOINT_ENV

SUBCOMMAND = ("supervisor", "run")
ORPHANED_EXIT_CODE = 75
"""How ``supervisor run`` exits when the gateway no longer knows its sandbox (deleted,
token revoked or expired): the driver then removes what it kept for the sandbox."""
ORPHANED_MESSAGE = (
    "torn down: the gateway no longer knows this sandbox, or the supervisor's token "
    "expired unrenewed"
)
"""How every driver reports a supervisor that exited with :data:`ORPHANED_EXIT_CODE`."""
MAX_PROXY_WORKERS = 64
"""The most proxy worker processes one sandbox may have (``--proxy-workers``)."""


@dataclass(frozen=True, slots=True)
class SupervisorInvocation:
    """The supervisor's options; ``identity_socket`` is a filesystem path."""

    gateway_url: str
    sandbox_id: str
    token_file: str
    identity_socket: str
    command: tuple[str, ...] = ()
    proxy_port: int | None = None
    parent_pid: int | None = None
    hide: tuple[str, ...] = ()
    resolve: tuple[str, ...] = ()
    upstream_ca_file: str | None = None
    proxy_workers: int = 1
    """Processes serving the sandbox's egress proxy (one: the supervisor serves it itself)."""

    @property
    def identity_socket_uri(self) -> str:
        return "unix://" + self.identity_socket

    def args(self) -> list[str]:
        """The options after ``supervisor run``, then ``--`` and the agent command."""
        args = ["--gateway", self.gateway_url.rstrip("/"), "--sandbox-id", self.sandbox_id]
        args += ["--token-file", self.token_file, "--identity-socket", self.identity_socket_uri]
        if self.parent_pid is not None:
            args += ["--parent-pid", str(self.parent_pid)]
        if self.proxy_port is not None:
            args += ["--proxy-port", str(self.proxy_port)]
        for directory in self.hide:
            args += ["--hide", directory]
        for item in self.resolve:
            args += ["--resolve", item]
        if self.upstream_ca_file is not None:
            args += ["--upstream-ca", self.upstream_ca_file]
        if self.proxy_workers != 1:
            args += ["--proxy-workers", str(self.proxy_workers)]
        if self.command:
            args += ["--", *self.command]
        return args

    def argv(self, program: Sequence[str]) -> list[str]:
        """The full command line, ``program`` being how to start ``grantbox``."""
        return [*program, *SUBCOMMAND, *self.args()]

    def environment(self, *, path: str | None = None) -> dict[str, str]:
        """The supervisor's whole environment (nothing inherited from the driver)."""
        env = {"LANG": "C.UTF-8", ENDPOINT_ENV: self.identity_socket_uri}
        if path is not None:
            env["PATH"] = path
        return env
