"""DESIGN §3.5 #9: the seccomp filter refuses each listed call from inside a real sandbox.

Every probe passes arguments that are harmless when the call is allowed (a missing path, a
bad descriptor, an invalid flag the kernel checks first), so the same probe run outside the
fence answers with the kernel's own error or success. The test asserts EPERM inside and,
where the host's answer differs, that the difference is the filter's doing. Probes run as
the sandbox's root (real root, and the user-namespace path's root), where nothing but the
filter stands in the way.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pyseccomp
import pytest

from grantbox.sandbox import seccomp
from tests.support.sandbox_run import SandboxRunner

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]
CLONE_THREAD = 0x00010000
NOWHERE = "/nonexistent-grantbox-probe"
# name, arguments: ints, or ["s", text] for a C string, None for NULL.
PROBES: list[tuple[str, str, list[object]]] = [
    ("ptrace", "ptrace", [0, 0, 0, 0]),  # PTRACE_TRACEME
    ("process_vm_readv", "process_vm_readv", ["pid", None, 0, None, 0, 0]),
    ("process_vm_writev", "process_vm_writev", ["pid", None, 0, None, 0, 0]),
    ("bpf", "bpf", [999, None, 0]),
    ("io_uring_setup", "io_uring_setup", [0, None]),
    ("io_uring_enter", "io_uring_enter", [-1, 0, 0, 0, None, 0]),
    ("io_uring_register", "io_uring_register", [-1, 0, None, 0]),
    ("mount", "mount", [None, ["s", NOWHERE], None, 0, None]),
    ("umount2", "umount2", [["s", NOWHERE], 0]),
    ("pivot_root", "pivot_root", [["s", NOWHERE], ["s", NOWHERE]]),
    ("chroot", "chroot", [["s", NOWHERE]]),
    ("move_mount", "move_mount", [-1, None, -1, None, 0]),
    ("open_tree", "open_tree", [-1, None, 0]),
    ("fsopen", "fsopen", [None, 0]),
    ("fsmount", "fsmount", [-1, 0, 0]),
    ("fsconfig", "fsconfig", [-1, 0, None, None, 0]),
    ("fspick", "fspick", [-1, None, 0]),
    ("mount_setattr", "mount_setattr", [-1, None, 0, None, 0]),
    ("setns", "setns", [-1, 0]),
    ("keyctl", "keyctl", [0, -3, 0]),  # KEYCTL_GET_KEYRING_ID of the session keyring
    ("add_key", "add_key", [["s", "user"], ["s", "gbx"], ["s", "x"], 1, -100]),  # no keyring
    ("request_key", "request_key", [["s", "user"], ["s", "gbx"], None, -3]),
    ("perf_event_open", "perf_event_open", [None, 0, -1, -1, 0]),
    ("kexec_load", "kexec_load", [0, 0, None, 0x8000]),  # unknown flag: EINVAL
    ("kexec_file_load", "kexec_file_load", [-1, -1, 0, None, 0]),
    ("init_module", "init_module", [None, 0, ["s", ""]]),
    ("finit_module", "finit_module", [-1, ["s", ""], 0]),
    ("delete_module", "delete_module", [["s", "gbx_no_such_module"], 0o4000]),
    ("userfaultfd", "userfaultfd", [0o2000000]),
    ("open_by_handle_at", "open_by_handle_at", [-1, None, 0]),
    ("name_to_handle_at", "name_to_handle_at", [-1, None, None, None, 0]),
    ("syslog", "syslog", [10, None, 0]),  # SYSLOG_ACTION_SIZE_BUFFER
    ("acct", "acct", [["s", NOWHERE]]),
    ("swapon", "swapon", [["s", NOWHERE], 0]),
    ("swapoff", "swapoff", [["s", NOWHERE]]),
    ("reboot", "reboot", [0, 0, 0, None]),  # wrong magic: EINVAL
    *[(f"unshare {name}", "unshare", [flag]) for name, flag in seccomp.NAMESPACE_FLAGS.items()],
    # CLONE_THREAD without CLONE_SIGHAND is EINVAL before anything is created.
    *[
        (f"clone {name}", "clone", [flag | CLONE_THREAD, 0, None, None, 0])
        for name, flag in seccomp.NAMESPACE_FLAGS.items()
    ],
    ("socket AF_PACKET", "socket", [seccomp.AF_PACKET, seccomp.SOCK_RAW, 0]),
    ("socket AF_INET SOCK_RAW", "socket", [seccomp.AF_INET, seccomp.SOCK_RAW, 1]),
    ("socket AF_INET6 SOCK_RAW", "socket", [seccomp.AF_INET6, seccomp.SOCK_RAW, 58]),
    ("socket NETLINK_AUDIT", "socket", [seccomp.AF_NETLINK, seccomp.SOCK_RAW, 9]),
    ("socket NETLINK_KOBJECT_UEVENT", "socket", [seccomp.AF_NETLINK, 2, 15]),
    ("execveat AT_EMPTY_PATH", "execveat", [-1, ["s", ""], None, None, seccomp.AT_EMPTY_PATH]),
    ("personality ADDR_NO_RANDOMIZE", "personality", [seccomp.ADDR_NO_RANDOMIZE]),
    ("personality READ_IMPLIES_EXEC", "personality", [seccomp.READ_IMPLIES_EXEC]),
    ("seccomp SET_MODE_FILTER", "seccomp", [seccomp.SECCOMP_SET_MODE_FILTER, 0, None]),
    ("prctl PR_SET_SECCOMP", "prctl", [seccomp.PR_SET_SECCOMP, 2, None, 0, 0]),
]
# Calls the filter must leave alone: ordinary programs depend on them.
ALLOWED: list[tuple[str, str, list[object]]] = [
    ("socket NETLINK_ROUTE", "socket", [seccomp.AF_NETLINK, seccomp.SOCK_RAW, 0]),
    ("socket AF_INET stream", "socket", [seccomp.AF_INET, 1, 0]),
    ("socket AF_UNIX", "socket", [1, 1, 0]),
    ("personality query", "personality", [0xFFFFFFFF]),
    ("unshare CLONE_FILES", "unshare", [0x400]),
    ("getpid", "getpid", []),
]

# Each call runs in a child of its own, so one probe's effect (a new namespace, a changed
# persona) never colours the next; the child's exit code is the errno (0: it succeeded).
PROBE = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
for name, number, args in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:
        values = []
        for a in args:
            if a == "pid":
                a = os.getpid()
            if a is None:
                values.append(ctypes.c_void_p(None))
            elif isinstance(a, list):
                values.append(ctypes.c_char_p(a[1].encode()))
            else:
                values.append(ctypes.c_long(a))
        result = libc.syscall(ctypes.c_long(number), *values)
        os._exit(ctypes.get_errno() if result == -1 else 0)
    out[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(out))
"""


def _probe_list(probes: list[tuple[str, str, list[object]]]) -> str:
    return json.dumps(
        [
            [name, pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, call), args]
            for name, call, args in probes
        ]
    )


def _outside(probes: list[tuple[str, str, list[object]]]) -> dict[str, int]:
    """The same probes without the filter (a throwaway process of the host's root)."""
    done = subprocess.run(
        ["/usr/bin/python3", "-c", PROBE, _probe_list(probes)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout))


def test_every_rule_names_a_call_this_architecture_has() -> None:
    for rule in seccomp.RULES:
        assert pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, rule.call) > 0, rule.call
    names = {rule.call for rule in seccomp.RULES}
    assert set(seccomp.BLOCKED_CALLS) <= names
    assert {"unshare", "clone", "clone3", "socket", "execveat", "personality"} <= names
    clone3 = [r for r in seccomp.RULES if r.call == "clone3"]
    assert [r.errno_value for r in clone3] == [errno.ENOSYS]


def test_every_blocked_call_is_probed() -> None:
    probed = {call for _name, call, _args in PROBES}
    assert set(seccomp.BLOCKED_CALLS) <= probed
    assert {rule.call for rule in seccomp.RULES} - {"clone3"} <= probed


@pytest.mark.parametrize("path", ["root", "user-namespace"])
async def test_each_blocked_call_fails_with_eperm_inside(
    runner: SandboxRunner, rootless_runner: SandboxRunner, path: str
) -> None:
    chosen = runner if path == "root" else rootless_runner
    result = await chosen.run(["python3", "-c", PROBE, _probe_list(PROBES + ALLOWED)], root=True)
    assert result.code == 0, result
    inside = json.loads(result.out)
    outside = _outside(PROBES + ALLOWED)
    for name, _call, _args in PROBES:
        assert inside[name] == errno.EPERM, (name, inside[name], outside[name])
    for name, _call, _args in ALLOWED:
        assert inside[name] == 0, (name, inside[name])
    # Where the host's root gets another answer, the EPERM inside is the filter's.
    differing = [name for name, _c, _a in PROBES if outside[name] != errno.EPERM]
    assert len(differing) >= len(PROBES) - 8, outside


async def test_clone3_says_enosys_so_libc_falls_back_to_clone(runner: SandboxRunner) -> None:
    probe = [("clone3", "clone3", [None, 0])]
    result = await runner.run(["python3", "-c", PROBE, _probe_list(probe)], root=True)
    assert json.loads(result.out) == {"clone3": errno.ENOSYS}
    assert _outside(probe)["clone3"] != errno.ENOSYS
    threads = await runner.run(
        ["python3", "-c", "import threading; t=threading.Thread(target=print, args=('t',));"
         " t.start(); t.join()"]
    )  # fmt: skip
    assert threads.out == "t\n", threads


async def test_ordinary_tools_meet_the_filter(runner: SandboxRunner) -> None:
    script = (
        "unshare -U true && exit 10; unshare -rn true && exit 11; setarch -R true && exit 12;"
        " grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; ip -o link | wc -l"
    )
    result = await runner.sh(script)
    assert result.code == 0, result
    assert "Seccomp:\t2" in result.out and "NoNewPrivs:\t1" in result.out
    assert result.out.split()[-1] == "1"  # netlink route still works
    assert "Operation not permitted" in result.err
