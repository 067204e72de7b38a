"""A minimal stand-in process that owns a sandbox, for the supervisor-death invariant.

``python -m tests.support.sandbox_holder MARKER`` creates a sandbox network, launches
``sleep`` (with MARKER in its argv) inside the fence, prints ``ready`` and waits. Killing
this process with SIGKILL must take the sandboxed process down with it.
"""

from __future__ import annotations

import asyncio
import sys

from grantbox.sandbox.launcher import launch
from grantbox.sandbox.network import create_sandbox_network
from tests.support.sandbox_run import SandboxRunner


async def main(marker: str) -> None:
    network = create_sandbox_network(3128, rootless=False)
    runner = SandboxRunner(network)
    spec = runner.spec(["/bin/sh", "-c", f"sleep 600 & sleep 601; : {marker}"])
    await launch(spec, network)
    await asyncio.sleep(0.5)
    print("ready", flush=True)
    await asyncio.sleep(600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
