"""Run the sandbox isolation once and report, for capability tests of the sandbox pod.

``python -m tests.support.kube_capability_probe MODE HIDDEN_DIR`` is started by the tests
under ``setpriv`` with exactly the capabilities a sandbox pod's container has, so what it
prints is what the isolation can do with them. It uses the real network helper and
launcher, the same calls ``grantbox supervisor run`` makes. Modes:

* ``agent``: run ``/bin/sh`` as the agent and print its uid, capabilities, network
  interfaces and whether the hidden directory's file is visible;
* ``sigterm``: run ``sleep 30`` as the agent, send SIGTERM to the stage, print the exit
  status (143 when the signal reached the agent).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from grantbox.sandbox.environment import agent_environment
from grantbox.sandbox.launcher import launch
from grantbox.sandbox.network import create_sandbox_network
from grantbox.sandbox.spec import DEFAULT_CA_PATH, LaunchSpec

_SCRIPT = (
    'echo "uid=$(id -u)"; grep CapEff /proc/self/status; '
    "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '; echo; "
    'if cat "$1/secret" 2>/dev/null; then echo visible; else echo hidden; fi'
)


async def probe(mode: str, hidden: str) -> dict[str, object]:
    try:
        network = create_sandbox_network(rootless=False)
    except Exception as exc:
        return {"stage": "network", "error": str(exc)}
    try:
        argv = ["/bin/sh", "-c", _SCRIPT, "sh", hidden] if mode == "agent" else ["sleep", "30"]
        spec = LaunchSpec(
            argv=tuple(argv),
            env=agent_environment(proxy_port=network.port, ca_bundle=DEFAULT_CA_PATH),
            hidden=(hidden,),
            ca_pem="-----BEGIN CERTIFICATE-----\nTUlJ\n-----END CERTIFICATE-----\n",
        )
        process = await launch(
            spec, network, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        if mode == "sigterm":
            await asyncio.sleep(1.0)
            process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 20)
        return {
            "stage": "agent",
            "code": process.returncode,
            "out": out.decode(),
            "err": err.decode(),
            "root_writable": os.access("/", os.W_OK),
        }
    finally:
        network.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(probe(sys.argv[1], sys.argv[2]))))
