"""Keyring persistence: one JSON file, mode 0600, in a 0700 state directory.

Written atomically (temporary file + rename) so a crash never leaves a half-written key.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .keyring import Keyring
from .keys import SigningKey, check_algorithm, load_private_key

KEYRING_FILE = "jwt-signing-keys.json"
FORMAT_VERSION = 1


class KeystoreError(Exception):
    """The stored keyring cannot be used; the message names the file, never key material."""


def _key_record(key: SigningKey, role: str) -> dict[str, Any]:
    return {
        "role": role,
        "kid": key.kid,
        "alg": key.algorithm,
        "created_at": key.created_at,
        "activated_at": key.activated_at,
        "retired_at": key.retired_at,
        "drop_after": key.drop_after,
        "private_key_pem": key.private_pem().decode("ascii"),
    }


def keyring_to_json(ring: Keyring) -> str:
    records = [_key_record(ring.active, "active"), _key_record(ring.upcoming, "upcoming")]
    records.extend(_key_record(k, "retired") for k in ring.retired)
    document = {
        "version": FORMAT_VERSION,
        "sequence": ring.sequence,
        "max_svid_ttl": ring.max_svid_ttl,
        "keys": records,
    }
    return json.dumps(document, indent=1)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _key_from_record(record: dict[str, Any]) -> SigningKey:
    algorithm = check_algorithm(str(record["alg"]))
    return SigningKey(
        kid=str(record["kid"]),
        algorithm=algorithm,
        private_key=load_private_key(str(record["private_key_pem"]).encode("ascii"), algorithm),
        created_at=float(record["created_at"]),
        activated_at=_optional_float(record.get("activated_at")),
        retired_at=_optional_float(record.get("retired_at")),
        drop_after=_optional_float(record.get("drop_after")),
    )


def keyring_from_json(text: str) -> Keyring:
    document = json.loads(text)
    if document.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown keyring format version {document.get('version')!r}")
    by_role: dict[str, list[SigningKey]] = {"active": [], "upcoming": [], "retired": []}
    for record in document["keys"]:
        by_role[str(record["role"])].append(_key_from_record(record))
    if len(by_role["active"]) != 1 or len(by_role["upcoming"]) != 1:
        raise ValueError("keyring needs exactly one active and one upcoming key")
    return Keyring(
        active=by_role["active"][0],
        upcoming=by_role["upcoming"][0],
        retired=tuple(by_role["retired"]),
        sequence=int(document["sequence"]),
        max_svid_ttl=float(document["max_svid_ttl"]),
    )


class KeyStore:
    """Loads and saves the keyring under ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / KEYRING_FILE

    def load(self) -> Keyring | None:
        """The stored keyring, or None when none was saved yet."""
        try:
            text = self.path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeystoreError(f"{self.path} is accessible by others (mode {mode:o}); refusing")
        try:
            return keyring_from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise KeystoreError(
                f"{self.path} is not a usable keyring: {type(exc).__name__}"
            ) from None

    def save(self, ring: Keyring) -> None:
        write_private_file(self.path, keyring_to_json(ring).encode("ascii"))


def read_private_file(path: Path) -> bytes | None:
    """A state file's bytes, or None when it does not exist; refused when others can read it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeystoreError(f"{path} is accessible by others (mode {mode:o}); refusing")
    return data


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` (mode 0600, in a 0700 directory) with ``data``."""
    directory = path.parent
    # Every missing level 0700: mkdir(parents=True) would make the parents 0755, and the
    # parent is often the gateway's state directory, which must stay private.
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for level in reversed(missing):
        level.mkdir(mode=0o700, exist_ok=True)
        os.chmod(level, 0o700)
    os.chmod(directory, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
