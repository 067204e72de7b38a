"""A real Keycloak on loopback, for ``grantbox demo --issuer keycloak`` and the interop tests.

It runs the distribution ``make peers`` fetched and pre-built for SPIFFE client
authentication (``kc.sh start --optimized``), with a home of its own in a work directory
(its ``bin`` copied, the rest linked) so its database and logs never touch the cache. Realms
are imported from JSON at start; ``${NAME}`` placeholders in them are filled by Keycloak
from the environment given. The admin calls are the few grantbox needs: one client per
SPIFFE ID, authenticated with ``federated-jwt`` against a SPIFFE identity provider.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

ADMIN_USER = "admin"
HEAP = "-Xms256m -Xmx768m"
_LINKED = ("lib", "conf", "providers", "themes")


class KeycloakError(Exception):
    """Keycloak did not start or refused an admin call; the message says which."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (Keycloak needs its ports named up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Keycloak:
    """One Keycloak server process; use :func:`running_keycloak` to start and stop it."""

    def __init__(
        self,
        dist: Path,
        work: Path,
        *,
        realm_files: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.dist = dist
        self.home = work / "keycloak"
        self.log_path = work / "keycloak.log"
        self.realm_files = list(realm_files)
        self.host = host
        self.port = 0
        self._env = dict(env or {})
        self._password = secrets.token_urlsafe(18)
        self._process: subprocess.Popen[bytes] | None = None
        self._admin_token: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return f"Keycloak(base_url={self.base_url!r}, home={self.home})"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def realm_url(self, realm: str) -> str:
        """The realm's issuer identifier, which is also the audience Keycloak wants in an
        SVID it authenticates a client with."""
        return f"{self.base_url}/realms/{realm}"

    def token_url(self, realm: str) -> str:
        return f"{self.realm_url(realm)}/protocol/openid-connect/token"

    def jwks_url(self, realm: str) -> str:
        return f"{self.realm_url(realm)}/protocol/openid-connect/certs"

    def discovery(self, realm: str) -> dict[str, Any]:
        with httpx.Client(trust_env=False, timeout=10.0) as http:
            answer = http.get(f"{self.realm_url(realm)}/.well-known/openid-configuration")
            answer.raise_for_status()
            document: dict[str, Any] = answer.json()
            return document

    def log_tail(self, count: int = 20) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(lines[-count:])
        return ""

    # -- process -----------------------------------------------------------------------
    def _prepare_home(self) -> None:
        kc_sh = self.dist / "bin" / "kc.sh"
        if not kc_sh.is_file():
            raise KeycloakError(f"no Keycloak distribution at {self.dist}; run `make peers`")
        shutil.rmtree(self.home, ignore_errors=True)
        (self.home / "bin").mkdir(parents=True)
        # kc.sh finds its home from its own (symlink-resolved) path: copy it, link the rest.
        shutil.copy2(kc_sh, self.home / "bin" / "kc.sh")
        for name in _LINKED:
            (self.home / name).symlink_to(self.dist / name)
        imports = self.home / "data" / "import"
        imports.mkdir(parents=True)
        for realm in self.realm_files:
            shutil.copy2(realm, imports / realm.name)

    def start(self, timeout: float = 300.0, ready_realm: str = "master") -> None:
        """Start and wait until ``ready_realm`` serves its discovery document."""
        self._prepare_home()
        self.port = free_port(self.host)
        argv = [
            str(self.home / "bin" / "kc.sh"),
            "start",
            "--optimized",
            "--http-enabled=true",
            f"--http-host={self.host}",
            f"--http-port={self.port}",
            f"--hostname={self.base_url}",
            f"--http-management-port={free_port(self.host)}",
            "--import-realm",
        ]
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(self._env)
        env.setdefault("JAVA_OPTS_KC_HEAP", HEAP)
        env["KC_BOOTSTRAP_ADMIN_USERNAME"] = ADMIN_USER
        env["KC_BOOTSTRAP_ADMIN_PASSWORD"] = self._password
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                env=env,
                start_new_session=True,
            )
        self._wait_ready(ready_realm, timeout)

    def _wait_ready(self, realm: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.realm_url(realm)}/.well-known/openid-configuration"
        with httpx.Client(trust_env=False, timeout=5.0) as http:
            while True:
                if self._process is None or self._process.poll() is not None:
                    code = None if self._process is None else self._process.returncode
                    raise KeycloakError(
                        f"Keycloak exited with status {code} while starting "
                        f"(its log: {self.log_path})\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise KeycloakError(
                        f"Keycloak did not serve realm {realm} within {timeout:g} s "
                        f"(its log: {self.log_path})\n{self.log_tail()}"
                    )
                time.sleep(1.0)

    def stop(self, grace: float = 30.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    # -- admin API ----------------------------------------------------------------------
    def _token(self) -> str:
        cached = self._admin_token
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        with httpx.Client(trust_env=False, timeout=30.0) as http:
            answer = http.post(
                self.token_url("master"),
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": ADMIN_USER,
                    "password": self._password,
                },
            )
        if answer.status_code != 200:
            raise KeycloakError(f"Keycloak refused the admin login ({answer.status_code})")
        body = answer.json()
        token = str(body["access_token"])
        self._admin_token = (token, time.monotonic() + float(body.get("expires_in", 60)) - 10)
        return token

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """One admin REST call (``path`` below ``/admin/realms``); the JSON answer or None."""
        with httpx.Client(trust_env=False, timeout=30.0) as http:
            answer = http.request(
                method,
                f"{self.base_url}/admin/realms{path}",
                json=body,
                headers={"Authorization": f"Bearer {self._token()}"},
            )
        if answer.status_code >= 300:
            detail = answer.text.strip().replace("\n", " ")[:300]
            raise KeycloakError(f"{method} {path} answered {answer.status_code}: {detail}")
        return answer.json() if answer.content else None

    def add_spiffe_client(
        self,
        realm: str,
        spiffe_id: str,
        identity_provider: str,
        *,
        optional_scopes: Iterable[str] = (),
        client_id: str | None = None,
    ) -> str:
        """A confidential client whose credential is a JWT-SVID for ``spiffe_id`` from the
        SPIFFE identity provider ``identity_provider``; returns its internal id."""
        client = spiffe_client(spiffe_id, identity_provider, client_id=client_id)
        self.admin("POST", f"/{realm}/clients", client)
        (created,) = self.admin("GET", f"/{realm}/clients?clientId={client['clientId']}")
        internal = str(created["id"])
        scopes = {s["name"]: s["id"] for s in self.admin("GET", f"/{realm}/client-scopes")}
        for name in optional_scopes:
            if name not in scopes:
                raise KeycloakError(f"realm {realm} has no client scope {name!r}")
            self.admin("PUT", f"/{realm}/clients/{internal}/optional-client-scopes/{scopes[name]}")
        return internal

    def delete_client(self, realm: str, internal_id: str) -> None:
        self.admin("DELETE", f"/{realm}/clients/{internal_id}")


def spiffe_client(
    spiffe_id: str, identity_provider: str, *, client_id: str | None = None
) -> dict[str, Any]:
    """The client representation: service account on, only client credentials, and the
    ``federated-jwt`` authenticator matching the SVID's ``sub``."""
    return {
        "clientId": client_id or spiffe_id,
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": False,
        "serviceAccountsEnabled": True,
        "standardFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "clientAuthenticatorType": "federated-jwt",
        "attributes": {
            "jwt.credential.issuer": identity_provider,
            "jwt.credential.sub": spiffe_id,
        },
    }


@contextlib.contextmanager
def running_keycloak(
    dist: Path,
    work: Path,
    *,
    realm_files: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    ready_realm: str = "master",
    timeout: float = 300.0,
) -> Iterator[Keycloak]:
    server = Keycloak(dist, work, realm_files=realm_files, env=env)
    try:
        server.start(timeout=timeout, ready_realm=ready_realm)
        yield server
    finally:
        server.stop()
