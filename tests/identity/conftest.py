"""Shared pieces for identity tests: raw Workload API calls and JWKS verification."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest

from grantbox.identity import workload_api as wapi
from grantbox.identity_agent import IdentityAgent
from tests.support.identity_agent import running_agent

TRUST_DOMAIN = "example.org"
SANDBOX_PATH = "grantbox/sandbox/s1"
SANDBOX_ID = f"spiffe://{TRUST_DOMAIN}/{SANDBOX_PATH}"
AUDIENCE = "https://issuer.example.org/realms/demo"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[IdentityAgent]:
    """An agent with workload ``s1`` (no OIDC listener: it is the slow part to stop)."""
    async with running_agent(
        tmp_path, trust_domain=TRUST_DOMAIN, workloads={"s1": SANDBOX_PATH}
    ) as running:
        yield running


@pytest.fixture
async def oidc_agent(tmp_path: Path) -> AsyncIterator[IdentityAgent]:
    """Like ``agent``, plus OIDC discovery on a free loopback port."""
    async with running_agent(
        tmp_path, trust_domain=TRUST_DOMAIN, oidc=True, workloads={"s1": SANDBOX_PATH}
    ) as running:
        yield running


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


async def call(
    socket: Path | str,
    rpc: str,
    request: Any,
    *,
    metadata: tuple[tuple[str, str], ...] | None = wapi.SECURITY_METADATA,
) -> Any:
    """One raw unary (or first streamed) Workload API answer, or the AioRpcError raised."""
    async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
        method = getattr(wapi.WorkloadApiStub(channel), rpc)
        result = method(request, metadata=metadata, timeout=5.0)
        if hasattr(result, "read"):
            first = await result.read()
            result.cancel()
            return first
        return await result


async def status_of(socket: Path | str, rpc: str, request: Any, **kwargs: Any) -> grpc.StatusCode:
    try:
        await call(socket, rpc, request, **kwargs)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def fetch_token(socket: Path | str, audience: str = AUDIENCE) -> str:
    response = await call(socket, "FetchJWTSVID", wapi.JWTSVIDRequest(audience=[audience]))
    token: str = response.svids[0].svid
    return token


async def oidc_documents(oidc_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Discovery document and the JWKS it points to, fetched as a token issuer would."""
    async with httpx.AsyncClient(trust_env=False) as http:
        discovery = (await http.get(f"{oidc_url}/.well-known/openid-configuration")).json()
        keys = (await http.get(discovery["jwks_uri"])).json()
    return discovery, keys


async def oidc_jwks(oidc_url: str) -> jwt.PyJWKSet:
    """The keys a token issuer would use: discovery document → jwks_uri → JWKS."""
    return jwt.PyJWKSet.from_dict((await oidc_documents(oidc_url))[1])


def verify(token: str, jwks: jwt.PyJWKSet, audience: str = AUDIENCE) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    key = jwks[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[header["alg"]], audience=audience, options={"require": ["exp"]}
    )
    return claims
