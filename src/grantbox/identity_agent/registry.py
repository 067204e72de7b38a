"""Workload registrations: which socket hands out which SPIFFE ID, and to whom.

Pure data and decisions; the agent owns the sockets. A registration binds a workload name
(its socket lives at ``DIR/NAME/agent.sock``) to one SPIFFE ID, optionally restricted to
callers whose kernel-reported uid is in an allow-list.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from spiffe import SpiffeId

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SOCKET_FILE = "agent.sock"
MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the terminating NUL


@dataclass(frozen=True)
class PeerCredentials:
    """What the kernel says about the process at the other end of a unix socket."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class Registration:
    name: str
    spiffe_id: str
    uids: frozenset[int] | None = None
    """None: any caller that can reach the socket; else only these uids."""


def check_workload_name(name: str) -> str:
    """A workload name becomes a directory name, so it must be one safe path component."""
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"invalid workload name {name!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def normalise_trust_domain(value: str) -> str:
    """A bare trust domain name (``example.org``), lower-cased; no scheme, no path."""
    try:
        parsed = SpiffeId(f"spiffe://{value}")
    except Exception as exc:
        raise ValueError(f"invalid trust domain {value!r}: {exc}") from None
    if parsed.path:
        raise ValueError(f"invalid trust domain {value!r}: must not contain a path")
    return str(parsed.trust_domain.name)


def workload_spiffe_id(trust_domain: str, spiffe_path: str) -> str:
    """``spiffe://TD/PATH`` for a registration path given with or without a leading slash."""
    path = spiffe_path.strip()
    path = path if path.startswith("/") else "/" + path
    if path == "/":
        raise ValueError("a workload SPIFFE path must not be empty")
    try:
        return str(SpiffeId(f"spiffe://{trust_domain}{path}"))
    except Exception as exc:
        raise ValueError(f"invalid SPIFFE path {spiffe_path!r}: {exc}") from None


def make_registration(
    name: str, trust_domain: str, spiffe_path: str, uids: Collection[int] | None
) -> Registration:
    if uids is not None and any(isinstance(u, bool) or u < 0 for u in uids):
        raise ValueError("uids must be non-negative integers")
    return Registration(
        name=check_workload_name(name),
        spiffe_id=workload_spiffe_id(trust_domain, spiffe_path),
        uids=None if uids is None else frozenset(int(u) for u in uids),
    )


def caller_allowed(registration: Registration | None, caller: PeerCredentials | None) -> bool:
    """Fail closed: unknown registration or unknown caller gets nothing."""
    if registration is None or caller is None:
        return False
    return registration.uids is None or caller.uid in registration.uids


def parse_workload_option(text: str) -> tuple[str, str, frozenset[int] | None]:
    """``NAME=SPIFFE_PATH[:UID[,UID...]]`` from the command line.

    SPIFFE paths cannot contain ``:``, so the uid list is unambiguous.
    """
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"expected NAME=SPIFFE_PATH[:UID,...], got {text!r}")
    path, colon, uid_text = rest.partition(":")
    uids: frozenset[int] | None = None
    if colon:
        try:
            uids = frozenset(int(u) for u in uid_text.split(","))
        except ValueError:
            raise ValueError(f"invalid uid list in {text!r}") from None
    return check_workload_name(name), path, uids
