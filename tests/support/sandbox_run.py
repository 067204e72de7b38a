"""Run a command in a real sandbox (real namespaces, real processes) and collect its output."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grantbox.sandbox.environment import agent_environment
from grantbox.sandbox.launcher import launch
from grantbox.sandbox.network import SandboxNetwork
from grantbox.sandbox.spec import DEFAULT_CA_PATH, LaunchSpec

TEST_CA = "-----BEGIN CERTIFICATE-----\nTUlJ\n-----END CERTIFICATE-----\n"


@dataclass(frozen=True)
class Finished:
    code: int
    out: str
    err: str


class SandboxRunner:
    def __init__(self, network: SandboxNetwork) -> None:
        self.network = network
        self.rootless = network.user_fd is not None

    def spec(
        self,
        argv: Sequence[str],
        *,
        hidden: Sequence[str] = (),
        declared: Mapping[str, str] | None = None,
        root: bool = False,
        uid: int | None = None,
        **fence: Any,
    ) -> LaunchSpec:
        """``root`` runs as uid 0, ``uid`` as that uid (and gid), else nobody; a rootless
        network runs as the namespace's own user. ``fence`` are further LaunchSpec fields
        (read_only, read_write, landlock, cgroup_procs, max_processes, ...)."""
        env = agent_environment(
            proxy_port=self.network.port, ca_bundle=DEFAULT_CA_PATH, declared=declared
        )
        return LaunchSpec(
            argv=tuple(argv),
            env=env,
            hidden=tuple(hidden),
            ca_pem=TEST_CA,
            uid=self.network.agent_in_namespace if self.rootless else 0 if root else uid or 65534,
            gid=self.network.agent_in_namespace if self.rootless else 0 if root else uid or 65534,
            nested_user_namespace=self.rootless,
            **fence,
        )

    async def run(self, argv: Sequence[str], *, timeout: float = 30.0, **kw: object) -> Finished:
        spec = self.spec(argv, **kw)  # type: ignore[arg-type]
        process = await launch(
            spec, self.network, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode is not None
        return Finished(process.returncode, out.decode(errors="replace"), err.decode())

    async def sh(self, script: str, **kw: object) -> Finished:
        return await self.run(["/bin/sh", "-c", script], **kw)
