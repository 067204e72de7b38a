"""Rootless sandboxes: a subordinate uid/gid for the agent, so it is not the operator.

Without root the sandbox's user namespace maps its root to the operator; an agent running
as that root would be the operator to the kernel. Where the system gives the operator
subordinate ids (``/etc/subuid``/``/etc/subgid``, written by ``useradd`` or ``usermod
--add-subuids``) and the setuid helpers ``newuidmap``/``newgidmap`` (Debian ``uidmap``)
exist, the namespace also maps uid/gid 1 to one subordinate id per sandbox, and the agent
runs as that: it owns nothing of the operator's and can write only what is world-writable.
Where they do not exist the agent runs as the operator inside a root where nothing of the
operator's is visible, and the supervisor says so.
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass

AGENT_IN_NAMESPACE = 1  # the agent's uid and gid inside the sandbox's user namespace
HELPERS = ("newuidmap", "newgidmap")


@dataclass(frozen=True, slots=True)
class SubIds:
    """The host uid and gid the sandbox's agent runs as."""

    uid: int
    gid: int


def ranges_for(text: str, user: str, uid: int) -> list[tuple[int, int]]:
    """``(start, count)`` ranges of ``/etc/subuid``-style ``text`` for a user (pure)."""
    found = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        if parts[1].isdigit() and parts[2].isdigit() and int(parts[2]) > 0:
            found.append((int(parts[1]), int(parts[2])))
    return found


def pick(ranges: list[tuple[int, int]], key: int) -> int | None:
    """One id of the ranges for ``key`` (e.g. the gateway's agent uid): distinct keys that
    are close together (as the gateway hands them out) get distinct ids (pure)."""
    total = sum(count for _start, count in ranges)
    if total == 0:
        return None
    offset = key % total
    for start, count in ranges:
        if offset < count:
            return start + offset
        offset -= count
    return None


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def for_operator(key: int) -> SubIds | None:
    """The agent's subordinate ids on this host, or None (with :func:`why_not` saying why)."""
    if any(shutil.which(helper) is None for helper in HELPERS):
        return None
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    sub_uid = pick(ranges_for(_read("/etc/subuid"), user, uid), key)
    sub_gid = pick(ranges_for(_read("/etc/subgid"), user, uid), key)
    if sub_uid is None or sub_gid is None:
        return None
    return SubIds(sub_uid, sub_gid)


def why_not() -> str:
    """One line for the operator when :func:`for_operator` found nothing."""
    missing = [helper for helper in HELPERS if shutil.which(helper) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian package uidmap)"
    return "no subordinate ids for this user in /etc/subuid and /etc/subgid (usermod --add-subuids)"
