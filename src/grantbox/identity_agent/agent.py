"""The local identity agent: a SPIFFE Workload API server for machines without SPIRE.

Each registered workload gets its own socket ``SOCKET_DIR/NAME/agent.sock``; whoever calls
on it (and passes the optional uid allow-list) receives ``spiffe://TD/PATH``. The agent runs
in the caller's event loop, so tests start it in-process next to the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization

from grantbox.identity import workload_api as wapi

from .admin import AdminServer
from .attestation import AttestingListener, CallerDirectory, prepare_socket_dir
from .authority import Authority
from .keys import check_algorithm
from .oidc import BUNDLE_PATH, OidcServer, bind_tcp, build_app
from .registry import (
    MAX_UNIX_PATH,
    SOCKET_FILE,
    Registration,
    check_workload_name,
    make_registration,
    normalise_trust_domain,
)
from .service import WorkloadApiService
from .x509_authority import X509Authority
from .x509_ca import DEFAULT_X509_SVID_TTL

log = logging.getLogger(__name__)

DEFAULT_ROTATION_INTERVAL = 24 * 3600.0
DEFAULT_SVID_TTL = 300.0
_STOP_GRACE = 0.5


class IdentityAgent:
    """Workload API server + signing authority + optional OIDC discovery and admin socket."""

    def __init__(
        self,
        *,
        socket_dir: Path,
        trust_domain: str,
        state_dir: Path | None = None,
        oidc_listen: tuple[str, int] | None = None,
        issuer: str | None = None,
        algorithm: str = "ES256",
        svid_ttl: float = DEFAULT_SVID_TTL,
        rotation_interval: float = DEFAULT_ROTATION_INTERVAL,
        admin_socket: Path | None = None,
        x509_svid_ttl: float = DEFAULT_X509_SVID_TTL,
    ) -> None:
        self._socket_dir = Path(socket_dir)
        self._trust_domain = normalise_trust_domain(trust_domain)
        self._authority = Authority(
            trust_domain=self._trust_domain,
            algorithm=check_algorithm(algorithm),
            svid_ttl=svid_ttl,
            rotation_interval=rotation_interval,
            issuer=issuer or None,
            state_dir=state_dir,
        )
        self._x509 = X509Authority(
            trust_domain=self._trust_domain, svid_ttl=x509_svid_ttl, state_dir=state_dir
        )
        self._oidc_listen = oidc_listen
        self._admin_socket = admin_socket
        self._directory = CallerDirectory()
        self._registrations: dict[str, Registration] = {}
        self._listeners: dict[str, AttestingListener] = {}
        self._grpc: grpc.aio.Server | None = None
        self._private_dir: Path | None = None
        self._backend: str | None = None
        self._oidc: OidcServer | None = None
        self._oidc_url: str | None = None
        self._admin: AdminServer | None = None
        self._rotation_task: asyncio.Task[None] | None = None
        self._reschedule = asyncio.Event()
        self._running = False

    def __repr__(self) -> str:
        return f"IdentityAgent(trust_domain={self._trust_domain!r}, socket_dir={self._socket_dir})"

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def oidc_url(self) -> str | None:
        """``http://HOST:PORT`` of the discovery endpoint (actual port), once started."""
        return self._oidc_url

    def x509_bundle_pem(self) -> bytes:
        """The trust domain's X.509 bundle (the CA certificate), for relying parties."""
        return self._x509.ca.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def bundle_url(self) -> str | None:
        """The SPIFFE bundle endpoint (JWT bundle, ``use: jwt-svid``), once started."""
        return None if self._oidc_url is None else self._oidc_url + BUNDLE_PATH

    @property
    def admin_socket(self) -> Path | None:
        return self._admin_socket

    @property
    def socket_dir(self) -> Path:
        return self._socket_dir

    def socket_path(self, name: str) -> Path:
        return self._socket_dir / check_workload_name(name) / SOCKET_FILE

    def workloads(self) -> dict[str, Registration]:
        return dict(self._registrations)

    async def start(self) -> None:
        if self._running:
            return
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self._running = True
        prepare_socket_dir(self._socket_dir, 0o711, enforce_mode=False)
        self._authority.load(time.time())
        self._x509.load(time.time())
        self._private_dir = Path(tempfile.mkdtemp(prefix="grantbox-identity-"))
        self._backend = str(self._private_dir / "grpc.sock")
        if len(self._backend.encode()) > MAX_UNIX_PATH:
            raise ValueError(
                f"temporary directory path too long for a unix socket: {self._backend}"
            )
        server = grpc.aio.server()
        service = WorkloadApiService(
            self._authority, self._directory, lambda: self._registrations, self._x509
        )
        wapi.add_servicer_to_server(service, server)
        server.add_insecure_port(f"unix:{self._backend}")
        await server.start()
        self._grpc = server
        for name, registration in list(self._registrations.items()):
            self._open_listener(name, registration)
        await asyncio.gather(*(lst.start_serving() for lst in self._listeners.values()))
        if self._admin_socket is not None:
            self._admin = AdminServer(self._admin_socket, self)
            await self._admin.start()
        if self._oidc_listen is not None:
            await self._start_oidc(*self._oidc_listen)
        self._rotation_task = asyncio.create_task(self._rotation_loop())
        log.info(
            "identity agent started",
            extra={
                "fields": {
                    "trust_domain": self._trust_domain,
                    "socket_dir": str(self._socket_dir),
                    "oidc_url": self._oidc_url,
                    "workloads": sorted(self._registrations),
                }
            },
        )

    async def _start_oidc(self, host: str, port: int) -> None:
        sock = bind_tcp(host, port)
        bound_port = sock.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        self._oidc_url = f"http://{url_host}:{bound_port}"
        base_url = self._oidc_url
        app = build_app(
            base_url=lambda: base_url,
            issuer=lambda: self._authority.issuer or base_url,
            jwks=self._authority.oidc_jwks,
            algorithms=self._authority.published_algorithms,
            bundle=self._authority.jwt_bundle,
        )
        self._oidc = OidcServer(app, sock)
        await self._oidc.start()

    async def stop(self) -> None:
        """Stop serving and remove every socket the agent created. Idempotent."""
        if not self._running:
            return
        self._running = False
        if self._rotation_task is not None:
            self._rotation_task.cancel()
            await asyncio.gather(self._rotation_task, return_exceptions=True)
            self._rotation_task = None
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None
        listeners = list(self._listeners.values())
        self._listeners.clear()
        await asyncio.gather(*(lst.close() for lst in listeners), return_exceptions=True)
        for lst in listeners:
            _remove_empty_dir(lst.path.parent)
        if self._grpc is not None:
            await self._grpc.stop(_STOP_GRACE)
            self._grpc = None
        if self._oidc is not None:
            await self._oidc.stop()
            self._oidc = None
        self._oidc_url = None
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None
        log.info("identity agent stopped", extra={"fields": {"trust_domain": self._trust_domain}})

    def add_workload(
        self, name: str, spiffe_path: str, *, uids: Collection[int] | None = None
    ) -> Path:
        """Register (or re-register) a workload; returns its socket path.

        When the agent is running, the socket exists when this returns.
        """
        registration = make_registration(name, self._trust_domain, spiffe_path, uids)
        path = self.socket_path(name)
        if len(str(path).encode()) > MAX_UNIX_PATH:
            raise ValueError(f"socket path {path} is too long for a unix socket")
        if name in self._registrations:
            self.remove_workload(name)
        listener = self._open_listener(name, registration) if self._grpc is not None else None
        self._registrations[name] = registration
        if listener is not None:
            listener.start_serving()
        log.info(
            "workload added",
            extra={
                "fields": {
                    "workload": name,
                    "spiffe_id": registration.spiffe_id,
                    "socket": str(path),
                    "uids": None if uids is None else sorted(registration.uids or ()),
                }
            },
        )
        return path

    def _open_listener(self, name: str, registration: Registration) -> AttestingListener:
        """A workload only our own uid may use gets a 0700 directory and a 0600 socket, so
        no other user (no sandbox agent, of any instance) can even reach it; one open to
        other uids gets a directory nobody can list (0711) and SO_PEERCRED decides."""
        if self._backend is None:
            raise RuntimeError("agent not started")
        path = self.socket_path(name)
        private = registration.uids == frozenset({os.geteuid()})
        prepare_socket_dir(path.parent, 0o700 if private else 0o711, enforce_mode=True)
        listener = AttestingListener(name, path, self._backend, self._directory)
        listener.bind(0o600 if private else 0o666)
        self._listeners[name] = listener
        return listener

    def remove_workload(self, name: str) -> None:
        """Forget a workload: new calls are denied, open connections dropped, socket removed."""
        registration = self._registrations.pop(name, None)
        if registration is None:
            raise KeyError(f"no workload named {name!r}")
        if not any(r.spiffe_id == registration.spiffe_id for r in self._registrations.values()):
            self._x509.forget(registration.spiffe_id)
        listener = self._listeners.pop(name, None)
        if listener is not None:
            listener.close_nowait()
            _remove_empty_dir(listener.path.parent)
        log.info("workload removed", extra={"fields": {"workload": name}})

    async def rotate_keys(self) -> None:
        """Rotate the signing key now (tests, operators); the old key stays until its SVIDs
        have expired."""
        self._authority.rotate(time.time())
        self._reschedule.set()

    async def _rotation_loop(self) -> None:
        while True:
            delay = max(0.0, self._authority.next_wake() - time.time())
            self._reschedule.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reschedule.wait(), timeout=min(delay, 3600.0))
            try:
                self._authority.advance(time.time())
            except OSError as exc:
                log.error("key rotation failed", extra={"fields": {"error": str(exc)}})
                await asyncio.sleep(5.0)

    async def __aenter__(self) -> IdentityAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _remove_empty_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()
