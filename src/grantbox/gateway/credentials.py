"""Static provider credentials, sealed at rest with a key kept in the state directory."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .secret_files import read_or_create


class CredentialSealError(RuntimeError):
    """Stored credentials cannot be opened with this gateway's key."""


class CredentialSealer:
    """Encrypts a ``{name: value}`` map to an opaque string and back (Fernet, AEAD)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def __repr__(self) -> str:
        return "CredentialSealer(<key hidden>)"

    @classmethod
    def load_or_create(cls, path: Path) -> CredentialSealer:
        return cls(read_or_create(path, Fernet.generate_key).strip())

    def seal(self, values: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(values, sort_keys=True).encode()).decode()

    def open(self, sealed: str) -> dict[str, str]:
        try:
            data = json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken:
            raise CredentialSealError("stored credentials do not open with this key") from None
        return {str(k): str(v) for k, v in data.items()}
