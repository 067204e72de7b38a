"""What the supervisor asks the fence for: its options and the agent's launch spec (pure).

Everything here is plain data in, plain data out: no token file is read, no socket opened,
so the agent's view (hidden directories, environment, identity) is tested on its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grantbox.profiles import SandboxPolicy
from grantbox.sandbox.environment import agent_environment
from grantbox.sandbox.hiding import hidden_directories, socket_directory
from grantbox.sandbox.limits import Limits
from grantbox.sandbox.network import DEFAULT_PROXY_PORT
from grantbox.sandbox.spec import DEFAULT_CA_PATH, NOBODY, LaunchSpec


@dataclass(frozen=True, slots=True)
class SupervisorOptions:
    gateway_url: str
    sandbox_id: str
    token_file: Path
    identity_socket: str
    command: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    proxy_port: int = DEFAULT_PROXY_PORT
    resolve: tuple[str, ...] = ()
    upstream_ca_file: Path | None = None
    rootless: bool | None = None
    declared_env: dict[str, str] = field(default_factory=dict)
    # Where to serve the proxy's and grant engine's Prometheus metrics (off when None).
    metrics_listen: tuple[str, int] | None = None
    # Processes serving the egress proxy; above one, a ProxyPool (the request path in
    # worker processes, the grant engine and the listener here).
    proxy_workers: int = 1

    def hidden(self) -> tuple[str, ...]:
        """The identity socket's directory, the token's directory, and any extra ones."""
        # Resolved: a symlinked directory must be checked (and hidden) where it really is.
        token_dir = str(self.token_file.resolve().parent)
        return hidden_directories([socket_directory(self.identity_socket), token_dir, *self.hide])

    def is_rootless(self) -> bool:
        return os.geteuid() != 0 if self.rootless is None else self.rootless


@dataclass(frozen=True, slots=True)
class Fence:
    """What the supervisor learned at run time for the fence.

    ``policy`` (filesystem view, Landlock mode, limits) and ``agent_uid`` come from the
    gateway's effective config; ``namespace_agent`` is the agent's id inside a rootless
    sandbox's user namespace when subordinate ids are mapped; ``cgroup_procs`` the files
    of the sandbox's cgroup (none: ``limits`` become rlimits of each process).
    """

    policy: SandboxPolicy = field(default_factory=SandboxPolicy)
    agent_uid: int | None = None
    namespace_agent: int | None = None
    cgroup_procs: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)


def agent_launch_spec(
    options: SupervisorOptions,
    argv: Sequence[str],
    *,
    ca_pem: str = "",
    fence: Fence | None = None,
    placeholders: Mapping[str, str] | None = None,
) -> LaunchSpec:
    """The fence's instructions for one agent (or exec) process of this sandbox.

    Root mode: the gateway's uid for this sandbox (nobody when it reserved none). Rootless:
    the subordinate id mapped into the namespace, else the namespace's own user.
    ``placeholders`` (environment variable -> placeholder) stand in for the stored
    credentials: the agent's only view of them, never a value.
    """
    fence = fence or Fence()
    rootless = options.is_rootless()
    env = agent_environment(
        proxy_port=options.proxy_port,
        ca_bundle=DEFAULT_CA_PATH,
        declared={**options.declared_env, **(placeholders or {})},
    )
    uid = fence.namespace_agent if rootless else (fence.agent_uid or NOBODY)
    bounded = bool(fence.cgroup_procs)
    view = fence.policy.filesystem
    return LaunchSpec(
        argv=tuple(argv),
        env=env,
        hidden=options.hidden(),
        ca_pem=ca_pem,
        uid=uid,
        gid=uid,
        nested_user_namespace=rootless,
        read_only=view.read_only,
        read_write=view.read_write,
        landlock=str(view.landlock),
        cgroup_procs=fence.cgroup_procs,
        max_processes=None if bounded else fence.limits.processes,
        max_memory_bytes=None if bounded else fence.limits.memory_bytes,
    )
