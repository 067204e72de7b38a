from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from grantbox.identity_agent.keyring import new_keyring, rotate
from grantbox.identity_agent.keys import new_signing_key
from grantbox.identity_agent.keystore import KEYRING_FILE, KeyStore, KeystoreError


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_round_trip_keeps_every_key(tmp_path: Path, algorithm: str) -> None:
    ring = new_keyring(new_signing_key(algorithm, 1.0), new_signing_key(algorithm, 1.0), 1.0, 300.0)  # type: ignore[arg-type]
    ring = rotate(ring, 10.0, new_signing_key(algorithm, 10.0), 300.0)  # type: ignore[arg-type]
    store = KeyStore(tmp_path / "state")
    assert store.load() is None
    store.save(ring)
    loaded = store.load()
    assert loaded == ring
    assert loaded is not None
    for a, b in zip(loaded.published, ring.published, strict=True):
        assert a.private_pem() == b.private_pem()


def test_files_are_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ring = new_keyring(new_signing_key("ES256", 1.0), new_signing_key("ES256", 1.0), 1.0, 300.0)
    KeyStore(state).save(ring)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / KEYRING_FILE).stat().st_mode) == 0o600
    assert [p.name for p in state.iterdir()] == [KEYRING_FILE]


def test_refuses_a_keyring_others_can_read(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.save(new_keyring(new_signing_key("ES256", 1.0), new_signing_key("ES256", 1.0), 1.0, 1.0))
    os.chmod(store.path, 0o644)
    with pytest.raises(KeystoreError, match="accessible by others"):
        store.load()


def test_corrupt_file_is_an_error_without_contents(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.path.write_text('{"version": 1, "keys": [{"private_key_pem": "SECRET"}]}')
    os.chmod(store.path, 0o600)
    with pytest.raises(KeystoreError) as info:
        store.load()
    assert "SECRET" not in str(info.value)
