"""Root-only administration of a running agent: add, remove and list workloads.

A unix socket (mode 0600) speaking one JSON object per line: one request, one answer, then
the connection closes. The kernel-reported uid of the caller must be root or the agent's own
uid, whatever the file mode says. The local compute driver uses the client functions at the
bottom from another process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .attestation import bind_listening_socket, read_peer_credentials
from .registry import PeerCredentials, Registration

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AddWorkload(_Request):
    op: Literal["add"]
    name: str
    spiffe_path: str
    uids: list[Annotated[int, Field(ge=0)]] | None = None


class RemoveWorkload(_Request):
    op: Literal["remove"]
    name: str


class ListWorkloads(_Request):
    op: Literal["list"]


AdminRequest = Annotated[AddWorkload | RemoveWorkload | ListWorkloads, Field(discriminator="op")]
_REQUEST = TypeAdapter(AdminRequest)


class AdminError(Exception):
    """The agent refused or could not process an admin request."""


class WorkloadAdmin(Protocol):
    def add_workload(
        self, name: str, spiffe_path: str, *, uids: Collection[int] | None = None
    ) -> Path: ...
    def remove_workload(self, name: str) -> None: ...
    def workloads(self) -> dict[str, Registration]: ...
    def socket_path(self, name: str) -> Path: ...


def admin_allowed(caller: PeerCredentials, agent_uid: int) -> bool:
    return caller.uid in (0, agent_uid)


def _describe(admin: WorkloadAdmin, registration: Registration) -> dict[str, Any]:
    return {
        "name": registration.name,
        "spiffe_id": registration.spiffe_id,
        "socket": str(admin.socket_path(registration.name)),
        "uids": None if registration.uids is None else sorted(registration.uids),
    }


def handle_request(admin: WorkloadAdmin, line: bytes) -> dict[str, Any]:
    """Apply one request line; the answer always has ``ok``, and ``error`` when not ok."""
    try:
        request = _REQUEST.validate_json(line)
    except ValidationError as exc:
        return {"ok": False, "error": f"invalid request: {exc.error_count()} problem(s)"}
    try:
        if isinstance(request, AddWorkload):
            admin.add_workload(request.name, request.spiffe_path, uids=request.uids)
            return {"ok": True, "workload": _describe(admin, admin.workloads()[request.name])}
        if isinstance(request, RemoveWorkload):
            admin.remove_workload(request.name)
            return {"ok": True}
        return {"ok": True, "workloads": [_describe(admin, r) for r in admin.workloads().values()]}
    except (ValueError, KeyError) as exc:
        return {"ok": False, "error": str(exc)}


class AdminServer:
    def __init__(self, path: Path, admin: WorkloadAdmin) -> None:
        self.path = path
        self._admin = admin
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        sock = bind_listening_socket(self.path, 0o600)
        self._server = await asyncio.start_unix_server(self._accepted, sock=sock, limit=MAX_REQUEST)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            caller = read_peer_credentials(writer.get_extra_info("socket"))
            # Read before answering either way: closing on unread data resets the connection
            # and the refused caller would see an error instead of the refusal.
            line = await asyncio.wait_for(reader.readline(), timeout=10.0)
            if not admin_allowed(caller, os.geteuid()):
                log.warning("admin request refused", extra={"fields": {"uid": caller.uid}})
                answer: dict[str, Any] = {"ok": False, "error": "permission denied"}
            else:
                answer = handle_request(self._admin, line)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, ValueError, TimeoutError) as exc:
            log.debug("admin connection failed", extra={"fields": {"error": type(exc).__name__}})
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.path.unlink(missing_ok=True)


async def _call(
    admin_socket: Path | str, request: dict[str, Any], deadline: float
) -> dict[str, Any]:
    async def exchange() -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(str(admin_socket), limit=MAX_REQUEST)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        answer: dict[str, Any] = json.loads(line) if line else {"ok": False, "error": "no answer"}
        return answer

    try:
        answer = await asyncio.wait_for(exchange(), timeout=deadline)
    except (OSError, TimeoutError, ValueError) as exc:
        raise AdminError(f"identity agent admin socket {admin_socket}: {exc}") from None
    if not answer.get("ok"):
        raise AdminError(str(answer.get("error", "request failed")))
    return answer


async def add_workload_remote(
    admin_socket: Path | str,
    name: str,
    spiffe_path: str,
    uids: Collection[int] | None = None,
    *,
    deadline: float = 5.0,
) -> Path:
    """Register a workload with a running agent; returns its Workload API socket path."""
    request = {
        "op": "add",
        "name": name,
        "spiffe_path": spiffe_path,
        "uids": None if uids is None else sorted(uids),
    }
    answer = await _call(admin_socket, request, deadline)
    return Path(answer["workload"]["socket"])


async def remove_workload_remote(
    admin_socket: Path | str, name: str, *, deadline: float = 5.0
) -> None:
    await _call(admin_socket, {"op": "remove", "name": name}, deadline)


async def list_workloads_remote(
    admin_socket: Path | str, *, deadline: float = 5.0
) -> list[dict[str, Any]]:
    answer = await _call(admin_socket, {"op": "list"}, deadline)
    workloads: list[dict[str, Any]] = answer["workloads"]
    return workloads
