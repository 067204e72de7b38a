"""Start a process inside the fence: the supervisor side of the stage/init pair."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import IO, Any

from .network import SandboxNetwork
from .spec import LaunchSpec

_Stream = int | IO[Any] | None


def stage_argv(parent: int, spec_fd: int, network: SandboxNetwork) -> list[str]:
    argv = [sys.executable, "-I", "-m", "grantbox.sandbox.stage", "--parent", str(parent)]
    argv += ["--spec-fd", str(spec_fd), "--net-fd", str(network.net_fd)]
    if network.user_fd is not None:
        argv += ["--user-fd", str(network.user_fd)]
    return argv


async def launch(
    spec: LaunchSpec,
    network: SandboxNetwork,
    *,
    stdin: _Stream = asyncio.subprocess.DEVNULL,
    stdout: _Stream = None,
    stderr: _Stream = None,
) -> asyncio.subprocess.Process:
    """Run ``spec`` in new mount and PID namespaces inside ``network``.

    Must be called from the thread that lives as long as the supervisor (the event loop's
    thread): the stage's parent-death signal fires when the *thread* that forked it exits.
    The returned process is the stage; its exit status is the sandboxed command's.
    """
    spec_fd = os.memfd_create("sandbox-spec", os.MFD_CLOEXEC)
    try:
        os.write(spec_fd, spec.to_bytes())
        os.lseek(spec_fd, 0, os.SEEK_SET)
        return await asyncio.create_subprocess_exec(
            *stage_argv(os.getpid(), spec_fd, network),
            pass_fds=(spec_fd, *network.pass_fds()),
            env={},
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    finally:
        os.close(spec_fd)
