"""Operator token, supervisor tokens, sealed credentials and the files that hold keys."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import jwt
import pytest
from cryptography.fernet import Fernet

from grantbox.gateway.auth import (
    OperatorToken,
    SupervisorTokenIssuer,
    TokenError,
    bearer_token,
)
from grantbox.gateway.credentials import CredentialSealer, CredentialSealError
from grantbox.gateway.secret_files import SecretFileError, read_or_create
from grantbox.gateway.settings import parse_listen


def test_operator_token_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "config" / "operator-token"
    first = OperatorToken.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert OperatorToken.load_or_create(path) == first
    assert first.matches(first.value)
    assert not first.matches(first.value + "x")
    assert first.value not in repr(first)


def test_secret_files_with_loose_modes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    read_or_create(path, lambda: b"secret")
    os.chmod(path, 0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        read_or_create(path, lambda: b"other")


def test_supervisor_tokens_are_bound_and_short_lived(tmp_path: Path) -> None:
    issuer = SupervisorTokenIssuer.load_or_create(tmp_path / "k.pem", "gw", 60)
    token = issuer.mint("sandbox-1")
    claims = issuer.verify(token)
    assert claims.sandbox_id == "sandbox-1"
    assert claims.expires_at - time.time() <= 60
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    same_key = SupervisorTokenIssuer.load_or_create(tmp_path / "k.pem", "gw", 60)
    assert same_key.verify(token).sandbox_id == "sandbox-1"
    with pytest.raises(TokenError):
        issuer.verify(issuer.mint("sandbox-1", now=time.time() - 120))
    with pytest.raises(TokenError):
        SupervisorTokenIssuer.load_or_create(tmp_path / "other.pem", "gw", 60).verify(token)
    assert "PRIVATE" not in repr(issuer)


def test_tokens_without_the_sandbox_binding_are_refused(tmp_path: Path) -> None:
    issuer = SupervisorTokenIssuer.load_or_create(tmp_path / "k.pem", "gw", 60)
    now = int(time.time())
    base = {"iss": "grantbox-gateway", "aud": "gw", "iat": now, "exp": now + 60}
    forged = [
        base | {"sub": "sandbox:a", "scope": "supervisor"},
        base | {"sub": "sandbox:b", "sandbox_id": "a", "scope": "supervisor"},
        base | {"sub": "sandbox:a", "sandbox_id": "a", "scope": "operator"},
    ]
    for claims in forged:
        with pytest.raises(TokenError):
            issuer.verify(jwt.encode(claims, issuer._key, algorithm="EdDSA"))


def test_bearer_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_sealed_credentials_round_trip_only_with_their_key() -> None:
    sealer = CredentialSealer(Fernet.generate_key())
    sealed = sealer.seal({"token": "s3cret"})
    assert "s3cret" not in sealed
    assert sealer.open(sealed) == {"token": "s3cret"}
    with pytest.raises(CredentialSealError):
        CredentialSealer(Fernet.generate_key()).open(sealed)
    assert "key" in repr(sealer)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:7443", ("127.0.0.1", 7443)), ("[::1]:0", ("::1", 0)), ("h:1", ("h", 1))],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["7443", ":7443", "h:", "h:x", "h:70000"])
def test_parse_listen_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="listen"):
        parse_listen(value)


def test_supervisor_client_plans_renewal_from_the_tokens_own_lifetime(tmp_path: Path) -> None:
    from grantbox.supervisor import SupervisorClient

    issuer = SupervisorTokenIssuer.load_or_create(tmp_path / "k.pem", "gw", 90)
    issued = time.time()
    client = SupervisorClient("http://127.0.0.1:9", "sb", issuer.mint("sb", now=issued))
    assert client.token_expires_at == int(issued) + 90
    assert not client.renewal_due(now=issued + 10)
    assert client.renewal_due(now=issued + 61)
    assert SupervisorClient("http://127.0.0.1:9", "sb", "garbage").renewal_due()
