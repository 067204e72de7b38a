"""Everything `grantbox up` runs, for tests: gateway + identity agent + local driver, plus a
real token endpoint and a recording upstream the sandbox may reach through its proxy."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grantbox.drivers import LocalDriver, LocalDriverSettings
from grantbox.gateway import GatewayServer
from grantbox.identity_agent import IdentityAgent
from tests.support.gateway_server import GatewayCli, gateway_settings
from tests.support.identity_agent import running_agent
from tests.support.proxy_upstream import RecordingUpstream, running_upstream
from tests.support.token_endpoint import TokenEndpoint, running_token_endpoint

TRUST_DOMAIN = "example.org"
ALPHA = "alpha.localhost"


@dataclass
class Stack:
    gw: GatewayCli
    driver: LocalDriver
    agent: IdentityAgent
    issuer: TokenEndpoint
    upstream: RecordingUpstream
    socket_dir: Path
    workdir: Path
    server: GatewayServer

    @property
    def alpha_url(self) -> str:
        return f"http://{ALPHA}:{self.upstream.port}"

    def profile(self) -> dict[str, Any]:
        return {
            "id": "alpha",
            "credentials": [
                {
                    "name": "access_token",
                    "required": True,
                    "auth_style": "bearer",
                    "token_grant": {
                        "token_endpoint": self.issuer.token_url,
                        "jwt_svid_audience": self.issuer.issuer,
                        "client_assertion_type": (
                            "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
                        ),
                        "audience": "alpha",
                    },
                }
            ],
            "endpoints": [
                {"host": ALPHA, "port": self.upstream.port, "allowed_ips": ["127.0.0.1"]}
            ],
        }

    def policy(self) -> dict[str, Any]:
        endpoint = {"host": ALPHA, "port": self.upstream.port, "allowed_ips": ["127.0.0.1"]}
        return {"network": [{"name": "alpha", "endpoints": [endpoint]}]}


@contextlib.asynccontextmanager
async def running_stack(
    tmp_path: Path, *, proxy_workers: int = 1, **settings: Any
) -> AsyncIterator[Stack]:
    """The stack; ``settings`` override the gateway's (e.g. ``supervisor_token_ttl``);
    ``proxy_workers`` is what the local driver gives each supervisor (``up --proxy-workers``)."""
    socket_dir = Path(tempfile.mkdtemp(prefix="gbx-stack-", dir="/run"))
    os.chmod(socket_dir, 0o755)  # noqa: S103 - the fence, not permissions, must hide it
    try:
        async with (
            running_agent(tmp_path, oidc=True, admin=True, socket_dir=socket_dir) as agent,
            running_token_endpoint(oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN) as issuer,
            running_upstream() as upstream,
        ):
            assert agent.admin_socket is not None
            driver = LocalDriver(
                LocalDriverSettings(
                    state_root=tmp_path / "sandboxes",
                    identity_admin_socket=agent.admin_socket,
                    hide=(str(socket_dir),),
                    proxy_workers=proxy_workers,
                )
            )
            server = GatewayServer(gateway_settings(tmp_path, **settings), driver, shutdown_grace=1)
            server.start()
            try:
                gw = GatewayCli(server.url, server.operator_token, tmp_path)
                stack = Stack(gw, driver, agent, issuer, upstream, socket_dir, tmp_path, server)
                yield stack
            finally:
                for sandbox_id in driver.sandbox_ids():
                    pid = driver.supervisor_pid(sandbox_id)
                    if pid:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, 9)
                server.stop()
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
