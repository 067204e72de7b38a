"""#12: no kernel keyring is shared between sandboxes, or between a sandbox and its host.

Each sandbox's init joins a fresh session keyring before the agent starts, and the seccomp
filter refuses the keyctl family, so an agent can neither see a key its launcher possesses
nor leave one for another sandbox.
"""

from __future__ import annotations

import ctypes
import os
import uuid
from collections.abc import Iterator

import pytest

from tests.support.sandbox_run import SandboxRunner

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.path.exists("/proc/keys"), reason="kernel without /proc/keys"),
]
SYS_ADD_KEY = 248
SYS_KEYCTL = 250
KEY_SPEC_SESSION_KEYRING = -3
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_SETPERM = 5
KEYCTL_UNLINK = 9
POSSESSOR_ALL = 0x3F000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@pytest.fixture
def possessed_key() -> Iterator[str]:
    """A key only possessors can see, in a session keyring the sandbox's launcher holds."""
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers below are x86_64's")
    _libc.syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None)
    name = f"gbx-{uuid.uuid4().hex[:12]}"
    key = _libc.syscall(
        SYS_ADD_KEY, b"user", name.encode(), b"payload", 7, ctypes.c_long(KEY_SPEC_SESSION_KEYRING)
    )
    assert key > 0, os.strerror(ctypes.get_errno())
    assert _libc.syscall(SYS_KEYCTL, KEYCTL_SETPERM, ctypes.c_long(key), POSSESSOR_ALL) == 0
    try:
        assert name in open("/proc/keys").read()  # noqa: SIM115 - visible to us, its possessor
        yield name
    finally:
        _libc.syscall(
            SYS_KEYCTL, KEYCTL_UNLINK, ctypes.c_long(key), ctypes.c_long(KEY_SPEC_SESSION_KEYRING)
        )


@pytest.mark.parametrize("path", ["root", "user-namespace"])
async def test_the_agent_does_not_possess_its_launchers_keys(
    runner: SandboxRunner, rootless_runner: SandboxRunner, possessed_key: str, path: str
) -> None:
    chosen = runner if path == "root" else rootless_runner
    result = await chosen.sh("cat /proc/keys; echo end", root=True)
    assert result.code == 0, result
    assert possessed_key not in result.out
    assert result.out.endswith("end\n")


async def test_an_agent_cannot_leave_a_key_for_another(runner: SandboxRunner) -> None:
    add = (
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True);"
        " r = libc.syscall(248, b'user', b'gbx-left', b'x', 1, ctypes.c_long(-5));"
        " print(r, ctypes.get_errno())"
    )
    first = await runner.run(["python3", "-c", add], root=True)
    assert first.out.split() == ["-1", "1"], first  # EPERM: keyctl family refused
    second = await runner.sh("grep -c gbx-left /proc/keys; exit 0", root=True)
    assert second.out.strip() == "0"
