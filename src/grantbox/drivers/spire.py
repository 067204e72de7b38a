"""Sandbox identities from an external SPIRE, for the local driver (``grantbox up --spire-…``).

SPIRE's ``unix`` workload attestor knows a caller by its uid and gids. Supervisors run as
root (they build namespaces), so the uid cannot tell two sandboxes apart; the gid can. Each
sandbox gets a gid of its own from a reserved range, its supervisor is started with that gid
as its primary group, and one registration entry per sandbox maps
``unix:uid:<uid> + unix:gid:<gid>`` to ``spiffe://<td>/grantbox/sandbox/<id>``. The entry is
created before the supervisor starts and deleted when the sandbox is deleted (or found
left over by an earlier run: the entry id and gid are kept in the sandbox's directory).
The agent in the sandbox runs under its own uid and never sees the SPIRE agent's socket
(the supervisor hides the socket's directory, as it does the local agent's).

Entries are managed with the ``spire-server`` command against the server's admin socket;
gid choice is a pure function over the gids in use.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

ENTRY_FILE = "spire-entry.json"
DEFAULT_GID_RANGE = (1_900_000_000, 1_000)
"""First gid and how many: far above any login or system group."""
JWT_SVID_TTL = 300
"""Keycloak refuses an assertion older than 300 s; SPIRE's agent hands out SVIDs until about
half their life has passed, so a 300 s TTL keeps every SVID it serves acceptable."""
_COMMAND_TIMEOUT = 30.0


class SpireError(Exception):
    """The SPIRE server refused or could not be asked; the message says which."""


def parse_gid_range(text: str) -> tuple[int, int]:
    """``FIRST-LAST`` → (first, count)."""
    first_text, sep, last_text = text.partition("-")
    if not sep or not first_text.strip().isdigit() or not last_text.strip().isdigit():
        raise ValueError(f"expected FIRST-LAST gids, got {text!r}")
    first, last = int(first_text), int(last_text)
    if not 1000 <= first <= last < 2**32 - 1:
        raise ValueError(f"gid range {text!r} must lie within 1000-4294967294, first <= last")
    return first, last - first + 1


def pick_gid(first: int, count: int, used: Collection[int]) -> int:
    """The lowest gid of the range that no sandbox holds."""
    for gid in range(first, first + count):
        if gid not in used:
            return gid
    raise SpireError(
        f"all {count} gids reserved for sandboxes ({first}-{first + count - 1}) are in use"
    )


def entry_selectors(uid: int, gid: int) -> list[str]:
    return [f"unix:uid:{uid}", f"unix:gid:{gid}"]


@dataclass(frozen=True, slots=True)
class SpireSettings:
    """Where SPIRE is and which part of it grantbox may use."""

    server_socket: Path
    agent_socket: Path
    parent_id: str
    """The SPIFFE ID of this host's agent (or its alias) that entries hang off."""
    trust_domain: str
    gid_first: int = DEFAULT_GID_RANGE[0]
    gid_count: int = DEFAULT_GID_RANGE[1]
    server_command: str = "spire-server"


@dataclass(frozen=True, slots=True)
class SandboxEntry:
    entry_id: str
    spiffe_id: str
    gid: int


class SpireRegistrar:
    """Creates and deletes the per-sandbox registration entries; hands out the gids."""

    def __init__(self, settings: SpireSettings) -> None:
        self.settings = settings
        self._gids: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"SpireRegistrar(server_socket={self.settings.server_socket})"

    @property
    def agent_socket(self) -> Path:
        return self.settings.agent_socket

    async def _run(self, command: str, *flags: str) -> str:
        """``spire-server <command words> -socketPath S <flags>``; its stdout."""
        socket = str(self.settings.server_socket)
        argv = [self.settings.server_command, *command.split(), "-socketPath", socket, *flags]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise SpireError(f"cannot run {self.settings.server_command}: {exc.strerror}") from None
        try:
            out, err = await asyncio.wait_for(process.communicate(), _COMMAND_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise SpireError(f"spire-server {command} did not answer in time") from None
        if process.returncode != 0:
            last = (err or out).decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise SpireError(f"spire-server {command} failed: {last[0][:300]}")
        return out.decode(errors="replace")

    async def check(self) -> None:
        """The server answers on its admin socket and the agent socket exists."""
        await self._run("healthcheck")
        if not self.settings.agent_socket.exists():
            raise SpireError(f"no SPIRE agent socket at {self.settings.agent_socket}")

    def spiffe_id(self, spiffe_path: str) -> str:
        return f"spiffe://{self.settings.trust_domain}{spiffe_path}"

    async def register(self, sandbox_id: str, spiffe_path: str, uid: int) -> SandboxEntry:
        gid = pick_gid(self.settings.gid_first, self.settings.gid_count, self._gids.values())
        self._gids[sandbox_id] = gid
        spiffe_id = self.spiffe_id(spiffe_path)
        flags = ["-parentID", self.settings.parent_id, "-spiffeID", spiffe_id]
        for selector in entry_selectors(uid, gid):
            flags += ["-selector", selector]
        flags += ["-jwtSVIDTTL", str(JWT_SVID_TTL), "-output", "json"]
        try:
            answer = json.loads(await self._run("entry create", *flags))
            entry_id = str(answer["results"][0]["entry"]["id"])
        except (SpireError, ValueError, KeyError, IndexError, TypeError) as exc:
            self._gids.pop(sandbox_id, None)
            raise SpireError(f"cannot register {spiffe_id} with SPIRE: {exc}") from None
        return SandboxEntry(entry_id, spiffe_id, gid)

    async def unregister(self, sandbox_id: str, entry: SandboxEntry | None) -> None:
        """Delete the sandbox's entry (if known) and free its gid."""
        self._gids.pop(sandbox_id, None)
        if entry is not None:
            await self._run("entry delete", "-entryID", entry.entry_id)

    async def entry_exists(self, entry_id: str) -> bool:
        try:
            await self._run("entry show", "-entryID", entry_id)
        except SpireError:
            return False
        return True


def save_entry(directory: Path, entry: SandboxEntry) -> None:
    path = directory / ENTRY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"entry_id": entry.entry_id, "spiffe_id": entry.spiffe_id, "gid": entry.gid}, out)


def load_entry(directory: Path) -> SandboxEntry | None:
    try:
        data = json.loads((directory / ENTRY_FILE).read_text())
        return SandboxEntry(str(data["entry_id"]), str(data["spiffe_id"]), int(data["gid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
