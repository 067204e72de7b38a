"""Landlock over the agent's view: read everything it was shown, write only where allowed.

The mount view decides what the agent can see; Landlock is the kernel's second opinion on
what it may change. Even if a read-only bind were made writable again (the namespace's
root can remount what it mounted), writes outside the policy's ``read_write`` paths, the
private ``/tmp`` and ``/dev`` stay refused. Signals and abstract UNIX sockets are scoped to
the sandbox where the kernel supports it (ABI 6).

``landlockpy`` speaks the three system calls and knows which rights each ABI version has;
``best_effort`` drops what this kernel lacks, ``hard_requirement`` refuses to start the
agent on a kernel without Landlock at all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import landlockpy
from landlockpy import AccessFS, AccessNet, Scope

BEST_EFFORT = "best_effort"
HARD_REQUIREMENT = "hard_requirement"
MODES = (BEST_EFFORT, HARD_REQUIREMENT)

READ = AccessFS.EXECUTE | AccessFS.READ_FILE | AccessFS.READ_DIR
WRITE = (
    AccessFS.WRITE_FILE
    | AccessFS.REMOVE_DIR
    | AccessFS.REMOVE_FILE
    | AccessFS.MAKE_DIR
    | AccessFS.MAKE_REG
    | AccessFS.MAKE_SOCK
    | AccessFS.MAKE_FIFO
    | AccessFS.MAKE_SYM
    | AccessFS.REFER
    | AccessFS.TRUNCATE
    | AccessFS.RESOLVE_UNIX
)
DEVICES = READ | AccessFS.WRITE_FILE | AccessFS.IOCTL_DEV
# Always writable in the sandbox's own view: its tmpfs and its own /proc.
OWN_WRITABLE = ("/tmp", "/dev/shm", "/proc")  # noqa: S108 - the sandbox's private tmpfs


class LandlockUnavailable(RuntimeError):
    """The policy requires Landlock and this kernel does not offer it."""


@dataclass(frozen=True, slots=True)
class PathRule:
    path: str
    access: AccessFS


def plan(read_write: Sequence[str]) -> tuple[PathRule, ...]:
    """The rules for a view whose root is the sandbox's own (everything in it readable)."""
    rules = [PathRule("/", READ), PathRule("/dev", DEVICES)]
    rules += [PathRule(path, READ | WRITE) for path in (*OWN_WRITABLE, *read_write)]
    return tuple(rules)


def abi_version() -> int:
    """The kernel's Landlock ABI, 0 when it has none (too old, or not in the LSM list)."""
    return int(landlockpy.abi_version())


def restrict(rules: Sequence[PathRule], mode: str) -> int:
    """Enforce ``rules`` on the calling thread and everything it starts; return the ABI used.

    0 means Landlock was not available and ``mode`` allowed going on without it.
    """
    if mode not in MODES:
        raise ValueError(f"unknown Landlock mode {mode!r}")
    abi = abi_version()
    if abi < 1:
        if mode == HARD_REQUIREMENT:
            raise LandlockUnavailable(
                "the policy requires Landlock (filesystem.landlock: hard_requirement) and this "
                "kernel does not offer it; use Linux 5.13+ with landlock in the LSM list, or "
                "set filesystem.landlock to best_effort"
            )
        return 0
    # The network namespace already confines the agent's sockets; Landlock's TCP rules
    # would only get in the way of servers the agent runs for itself.
    scoped = Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL
    with landlockpy.Ruleset(handled_net=AccessNet.NONE, scoped=scoped) as ruleset:
        for rule in rules:
            # A policy path missing on this host is not in the view; nothing to allow.
            if os.path.exists(rule.path):
                ruleset.allow_path(rule.path, rule.access)
        ruleset.restrict(no_new_privs=True)
    return abi
