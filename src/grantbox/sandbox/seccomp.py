"""The agent's system-call filter: default allow, with the kernel's sharpest edges refused.

Programs keep working because nearly everything is allowed; what is refused is what an
agent only needs to attack the kernel or its neighbours: new namespaces (above all user
namespaces), mounting, tracing and reading other processes' memory, BPF, io_uring, raw and
packet sockets, netlink other than routing, kernel keyrings, modules and kexec, perf,
userfaultfd, weakening ASLR, and stacking filters of its own. Refusals return EPERM so
programs see an ordinary "not permitted"; ``clone3`` returns ENOSYS, which makes libc fall
back to ``clone``, whose flags (unlike clone3's, which sit in memory) a filter can see.
System calls of another architecture (32-bit entry points) kill the process.

The rules are plain data (:data:`RULES`) so tests can list and probe each one; libseccomp
(through the ``pyseccomp`` ctypes binding) turns them into BPF for this architecture.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass

import pyseccomp

# Namespace flags of clone/unshare (linux/sched.h).
NAMESPACE_FLAGS = {
    "CLONE_NEWTIME": 0x00000080,
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
AF_INET = 2
AF_INET6 = 10
AF_NETLINK = 16
AF_PACKET = 17
NETLINK_ROUTE = 0
SOCK_RAW = 3
SOCK_TYPE_MASK = 0xF
AT_EMPTY_PATH = 0x1000
ADDR_NO_RANDOMIZE = 0x0040000
READ_IMPLIES_EXEC = 0x0400000
# personality(0xffffffff) only asks for the current persona; no real persona sets bit 31.
PERSONALITY_QUERY_BIT = 0x80000000
SECCOMP_SET_MODE_FILTER = 1
PR_SET_SECCOMP = 22

# Refused whatever their arguments.
BLOCKED_CALLS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "bpf",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "syslog",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
)


@dataclass(frozen=True, slots=True)
class Condition:
    """``(argument & mask) == value`` for argument ``index`` (mask None: plain equality;
    ``negate``: plain inequality)."""

    index: int
    value: int
    mask: int | None = None
    negate: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """Refuse ``call`` with ``errno_value`` when every condition holds (none: always)."""

    call: str
    conditions: tuple[Condition, ...] = ()
    errno_value: int = errno.EPERM
    why: str = ""


def _rules() -> tuple[Rule, ...]:
    rules = [Rule(call, why="kernel surface or reaching outside") for call in BLOCKED_CALLS]
    for name, flag in NAMESPACE_FLAGS.items():
        rules.append(Rule("unshare", (Condition(0, flag, flag),), why=f"new namespace {name}"))
        rules.append(Rule("clone", (Condition(0, flag, flag),), why=f"new namespace {name}"))
    rules += [
        Rule(
            "clone3", errno_value=errno.ENOSYS, why="flags unfilterable; libc falls back to clone"
        ),
        Rule("socket", (Condition(0, AF_PACKET),), why="packet sockets"),
        *(
            Rule(
                "socket",
                (Condition(0, family), Condition(1, SOCK_RAW, SOCK_TYPE_MASK)),
                why="raw IP",
            )
            for family in (AF_INET, AF_INET6)
        ),
        Rule(
            "socket",
            (Condition(0, AF_NETLINK), Condition(2, NETLINK_ROUTE, negate=True)),
            why="netlink other than routing",
        ),
        Rule("execveat", (Condition(4, AT_EMPTY_PATH, AT_EMPTY_PATH),), why="exec of an fd"),
        Rule(
            "personality",
            (Condition(0, ADDR_NO_RANDOMIZE, ADDR_NO_RANDOMIZE | PERSONALITY_QUERY_BIT),),
            why="turning off ASLR",
        ),
        Rule(
            "personality",
            (Condition(0, READ_IMPLIES_EXEC, READ_IMPLIES_EXEC | PERSONALITY_QUERY_BIT),),
            why="executable data mappings",
        ),
        Rule("seccomp", (Condition(0, SECCOMP_SET_MODE_FILTER),), why="stacking filters"),
        Rule("prctl", (Condition(0, PR_SET_SECCOMP),), why="stacking filters"),
    ]
    return tuple(rules)


RULES = _rules()


def _argument(condition: Condition) -> pyseccomp.Arg:
    if condition.mask is not None:
        return pyseccomp.Arg(condition.index, pyseccomp.MASKED_EQ, condition.mask, condition.value)
    op = pyseccomp.NE if condition.negate else pyseccomp.EQ
    return pyseccomp.Arg(condition.index, op, condition.value)


def build_filter(rules: Sequence[Rule] = RULES) -> pyseccomp.SyscallFilter:
    """A libseccomp filter for the native architecture; foreign ones kill the process."""
    handle = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    handle.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    for rule in rules:
        args = [_argument(c) for c in rule.conditions]
        handle.add_rule(pyseccomp.ERRNO(rule.errno_value), rule.call, *args)
    return handle


def install(rules: Sequence[Rule] = RULES) -> None:
    """Load the filter into the calling thread; it holds across fork and exec.

    Needs ``no_new_privs`` (set by the caller, and by libseccomp's default) unless root.
    """
    build_filter(rules).load()
