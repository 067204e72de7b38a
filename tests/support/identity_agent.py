"""A real local identity agent for tests, in the test's own event loop.

    async with running_agent(tmp_path, trust_domain="example.org", oidc=True) as agent:
        socket = agent.add_workload("s1", "grantbox/sandbox/s1")
        client = WorkloadIdentityClient(str(socket))

Sockets live in a short, world-traversable directory under /tmp (unix socket paths are
limited to 107 bytes and pytest's tmp_path is long and private); keys go to
``tmp_path/identity-state`` so a second agent on the same tmp_path keeps them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from grantbox.identity_agent import IdentityAgent


@contextlib.contextmanager
def short_socket_dir() -> Iterator[Path]:
    """A fresh /tmp directory (mode 0755, so dropped-privilege callers can reach sockets)."""
    path = Path(tempfile.mkdtemp(prefix="gbx-id-", dir="/tmp"))
    os.chmod(path, 0o755)  # noqa: S103 - sockets must be reachable by dropped-privilege callers
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_agent(
    tmp_path: Path,
    *,
    trust_domain: str = "example.org",
    oidc: bool = False,
    workloads: Mapping[str, str] | None = None,
    socket_dir: Path | None = None,
    admin: bool = False,
    **agent_options: Any,
) -> AsyncIterator[IdentityAgent]:
    """Start an agent (OIDC on a free loopback port when ``oidc``), stop it afterwards."""
    with contextlib.ExitStack() as stack:
        sockets = socket_dir or stack.enter_context(short_socket_dir())
        agent_options.setdefault("state_dir", tmp_path / "identity-state")
        agent = IdentityAgent(
            socket_dir=sockets / "workloads",
            trust_domain=trust_domain,
            oidc_listen=("127.0.0.1", 0) if oidc else None,
            admin_socket=sockets / "admin.sock" if admin else None,
            **agent_options,
        )
        for name, path in (workloads or {}).items():
            agent.add_workload(name, path)
        await agent.start()
        try:
            yield agent
        finally:
            await agent.stop()
