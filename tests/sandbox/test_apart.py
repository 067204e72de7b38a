"""DESIGN §3.5 #8 and #9 through the whole local flow (gateway, driver, supervisor, fence):
sandboxes run as different kernel users that cannot touch each other's files or sockets,
and a sandbox that floods processes or memory is contained while its supervisor serves."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from grantbox.sandbox import limits
from tests.support.sandbox_stack import Stack, running_stack

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


@pytest.fixture
def shared() -> Iterator[Path]:
    """A host directory both sandboxes' policies list read-write (sticky, like /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="gbx-shared-", dir="/srv"))
    os.chmod(path, 0o1777)  # noqa: S103 - only the kernel's uid checks keep them apart
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _ready(stack: Stack, name: str, policy: dict[str, Any]) -> dict[str, Any]:
    path = stack.gw.write(f"{name}.yaml", policy)
    created = await asyncio.to_thread(
        stack.gw.json, "sandbox", "create", "--name", name, "--policy", path,
        "--", "sleep", "infinity",
    )  # fmt: skip
    for _ in range(600):
        view = await asyncio.to_thread(stack.gw.json, "sandbox", "get", name)
        if view["phase"] == "ready":
            return dict(view)
        await asyncio.sleep(0.05)
    raise AssertionError(f"sandbox {name} never became ready: {created}")


async def _exec(stack: Stack, name: str, script: str) -> Any:
    return await asyncio.to_thread(
        stack.gw.run, "sandbox", "exec", "--name", name, "--", "sh", "-c", script
    )


SERVE = (
    "import os, socket, time; s = socket.socket(socket.AF_UNIX);"
    " s.bind('{dir}/a.sock'); os.chmod('{dir}/a.sock', 0o600); s.listen(1);"
    " open('{dir}/a.txt', 'w').write('a-private'); os.chmod('{dir}/a.txt', 0o600);"
    " print('served', flush=True); time.sleep(60)"
)
PROBE = (
    "import socket\n"
    "for what in ('open', 'connect'):\n"
    "    try:\n"
    "        if what == 'open': print(open('{dir}/a.txt').read())\n"
    "        else: socket.socket(socket.AF_UNIX).connect('{dir}/a.sock'); print('connected')\n"
    "    except OSError as exc: print(what, exc.errno)\n"
)


async def test_two_sandboxes_are_two_users_that_cannot_touch_each_other(
    stack: Stack, shared: Path
) -> None:
    policy = stack.policy() | {"filesystem": {"read_write": [str(shared)]}}
    a = await _ready(stack, "box-a", policy)
    b = await _ready(stack, "box-b", policy)
    assert a["agent_uid"] != b["agent_uid"]
    ids = await _exec(stack, "box-a", "id -u; id -g")
    assert ids.stdout.split() == [str(a["agent_uid"])] * 2
    ids = await _exec(stack, "box-b", "id -u")
    assert ids.stdout.split() == [str(b["agent_uid"])]

    server = asyncio.create_task(_exec(stack, "box-a", f'python3 -c "{SERVE.format(dir=shared)}"'))
    for _ in range(400):
        if (shared / "a.sock").exists() and (shared / "a.txt").exists():
            break
        await asyncio.sleep(0.05)
    assert (shared / "a.sock").stat().st_uid == a["agent_uid"]
    probe = await _exec(
        stack,
        "box-b",
        f'python3 -c "{PROBE.format(dir=shared)}"; rm -f {shared}/a.txt; echo x > {shared}/a.txt',
    )
    assert "a-private" not in probe.stdout and "connected" not in probe.stdout
    assert "open 13" in probe.stdout and "connect 13" in probe.stdout, probe.stdout
    assert (shared / "a.txt").read_text() == "a-private"  # sticky: b cannot replace it
    server.cancel()
    for name in ("box-a", "box-b"):
        await asyncio.to_thread(stack.gw.run, "sandbox", "delete", name)


FLOOD = (
    "import os, time\n"
    "made = 0\n"
    "for _ in range(300):\n"
    "    try:\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(30); os._exit(0)\n"
    "        made += 1\n"
    "    except OSError as exc:\n"
    "        print('refused', exc.errno); break\n"
    "print('made', made)\n"
)
HOG = "b = []\nfor _ in range(40):\n    b.append(bytearray(8 * 1024 * 1024))\nprint('alive')\n"


async def test_flood_and_hog_are_contained_and_the_supervisor_keeps_serving(
    stack: Stack,
) -> None:
    policy = stack.policy() | {"limits": {"processes": 40, "memory_mib": 96}}
    view = await _ready(stack, "greedy", policy)
    sandbox_id = str(view["id"])
    layout = limits.current_layout()
    groups = [
        name
        for parent in layout.v1.values()
        for name in os.listdir(parent)
        if name.startswith(f"{limits.PREFIX}{sandbox_id}-")
    ]
    assert groups, "the sandbox should have a cgroup of its own"

    flood = await _exec(stack, "greedy", f'python3 -c "{FLOOD}"')
    assert "refused 11" in flood.stdout, (flood.stdout, flood.stderr)
    assert int(flood.stdout.split()[-1]) < 40
    hog = await _exec(stack, "greedy", f'python3 -c "{HOG}"; echo hog=$?')
    assert "alive" not in hog.stdout and "hog=137" in hog.stdout, (hog.stdout, hog.stderr)

    seen = len(stack.upstream.requests)
    after = await _exec(
        stack, "greedy", f"curl -sS -o /dev/null -w '%{{http_code}}' {stack.alpha_url}/after"
    )
    assert after.exit_code == 0 and after.stdout == "200", (after.stdout, after.stderr)
    assert any(r.target == "/after" for r in stack.upstream.requests[seen:])
    assert (await asyncio.to_thread(stack.gw.json, "sandbox", "get", "greedy"))["phase"] == "ready"

    await asyncio.to_thread(stack.gw.run, "sandbox", "delete", "greedy")
    left = [
        name
        for parent in layout.v1.values()
        for name in os.listdir(parent)
        if name.startswith(f"{limits.PREFIX}{sandbox_id}-")
    ]
    assert left == [], "the sandbox's cgroups outlived it"
