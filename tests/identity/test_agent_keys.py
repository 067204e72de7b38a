"""Key rotation with overlap, streamed bundle updates, and keys that survive a restart."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path

import grpc
import jwt
import pytest
from spiffe import WorkloadApiClient

from grantbox.identity import workload_api as wapi
from grantbox.identity_agent import IdentityAgent
from grantbox.identity_agent.keystore import KEYRING_FILE, KeystoreError
from tests.support.identity_agent import running_agent, short_socket_dir

from .conftest import AUDIENCE, SANDBOX_PATH, fetch_token, oidc_documents, oidc_jwks, verify


def kids(message: object) -> set[str]:
    (document,) = (json.loads(v) for v in message.bundles.values())  # type: ignore[attr-defined]
    return {key["kid"] for key in document["keys"]}


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def bundle_jwks(message: object) -> jwt.PyJWKSet:
    (raw,) = message.bundles.values()  # type: ignore[attr-defined]
    return jwt.PyJWKSet.from_json(raw.decode())


async def test_rotation_keeps_old_svids_valid_until_they_expire(tmp_path: Path) -> None:
    async with running_agent(
        tmp_path, oidc=True, workloads={"s1": SANDBOX_PATH}, svid_ttl=4.0
    ) as agent:
        socket = agent.socket_path("s1")
        async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
            stream = wapi.WorkloadApiStub(channel).FetchJWTBundles(
                wapi.JWTBundlesRequest(), metadata=wapi.SECURITY_METADATA
            )
            first = await asyncio.wait_for(stream.read(), 5)
            old = await fetch_token(socket)
            assert kid_of(old) in kids(first)

            await agent.rotate_keys()
            second = await asyncio.wait_for(stream.read(), 5)
            new = await fetch_token(socket)
            assert kid_of(new) != kid_of(old)
            assert kids(first) < kids(second)  # old active stays, new upcoming appears
            # Both verify with the streamed bundle and with the issuer-facing /keys.
            assert agent.oidc_url is not None
            for token in (old, new):
                verify(token, bundle_jwks(second))
                verify(token, await oidc_jwks(agent.oidc_url))

            # Once the old SVID has expired, the retired key leaves the bundle.
            third = await asyncio.wait_for(stream.read(), 15)
            exp = jwt.decode(old, options={"verify_signature": False})["exp"]
            assert time.time() >= exp
            assert kid_of(old) not in kids(third)
            assert kid_of(new) in kids(third)
            _, keys = await oidc_documents(agent.oidc_url)
            assert kid_of(old) not in {k["kid"] for k in keys["keys"]}
            stream.cancel()


async def test_scheduled_rotation_streams_new_state(tmp_path: Path) -> None:
    async with running_agent(
        tmp_path, workloads={"s1": SANDBOX_PATH}, rotation_interval=1.0
    ) as agent:
        socket = agent.socket_path("s1")
        before = kid_of(await fetch_token(socket))
        async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
            stream = wapi.WorkloadApiStub(channel).FetchJWTBundles(
                wapi.JWTBundlesRequest(), metadata=wapi.SECURITY_METADATA
            )
            first = await asyncio.wait_for(stream.read(), 5)
            second = await asyncio.wait_for(stream.read(), 10)  # nobody called rotate_keys
            assert kids(first) < kids(second)
            stream.cancel()
        after = kid_of(await fetch_token(socket))
        assert after != before


async def test_restart_keeps_keys(tmp_path: Path) -> None:
    async with running_agent(tmp_path, oidc=True, workloads={"s1": SANDBOX_PATH}) as first:
        token = await fetch_token(first.socket_path("s1"))
        await first.rotate_keys()
        rotated = await fetch_token(first.socket_path("s1"))
        assert first.oidc_url is not None
        _, keys_before = await oidc_documents(first.oidc_url)
    key_file = tmp_path / "identity-state" / KEYRING_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700

    async with running_agent(tmp_path, oidc=True, workloads={"s1": SANDBOX_PATH}) as second:
        socket = second.socket_path("s1")
        assert second.oidc_url is not None
        _, keys_after = await oidc_documents(second.oidc_url)
        assert keys_after == keys_before
        after_restart = await fetch_token(socket)
        assert kid_of(after_restart) == kid_of(rotated)

        def validate_with_pyspiffe() -> str:
            with WorkloadApiClient(f"unix:{socket}", default_timeout=5.0) as client:
                return str(client.validate_jwt_svid(token, AUDIENCE).spiffe_id)

        # An SVID minted before the restart, by a key retired before it, still validates.
        assert (
            await asyncio.to_thread(validate_with_pyspiffe)
            == f"spiffe://example.org/{SANDBOX_PATH}"
        )
        verify(token, await oidc_jwks(second.oidc_url))


async def test_changing_algorithm_rekeys_but_keeps_old_key_published(tmp_path: Path) -> None:
    async with running_agent(tmp_path, oidc=True, workloads={"s1": SANDBOX_PATH}) as first:
        es_token = await fetch_token(first.socket_path("s1"))
    async with running_agent(
        tmp_path, oidc=True, workloads={"s1": SANDBOX_PATH}, algorithm="RS256"
    ) as second:
        rs_token = await fetch_token(second.socket_path("s1"))
        assert jwt.get_unverified_header(rs_token)["alg"] == "RS256"
        assert second.oidc_url is not None
        jwks = await oidc_jwks(second.oidc_url)
        verify(es_token, jwks)
        verify(rs_token, jwks)
        discovery, _ = await oidc_documents(second.oidc_url)
        assert discovery["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]


async def test_unreadable_keyring_refuses_to_start(tmp_path: Path) -> None:
    state = tmp_path / "identity-state"
    state.mkdir()
    (state / KEYRING_FILE).write_text("{}")
    (state / KEYRING_FILE).chmod(0o644)
    with pytest.raises(KeystoreError, match="accessible by others"):
        async with running_agent(tmp_path, workloads={"s1": SANDBOX_PATH}):
            pass


async def test_restart_in_process_without_state_dir_keeps_keys(tmp_path: Path) -> None:
    with short_socket_dir() as base:
        agent = IdentityAgent(socket_dir=base / "s", trust_domain="example.org")
        socket = agent.add_workload("s1", SANDBOX_PATH)
        async with agent:
            before = kid_of(await fetch_token(socket))
        async with agent:
            assert kid_of(await fetch_token(socket)) == before
