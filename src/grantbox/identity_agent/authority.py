"""The trust domain's signing authority: holds the keyring, mints and validates JWT-SVIDs,
publishes bundles, and tells waiting streams when the published keys change."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import jwt_svid
from .keyring import (
    Keyring,
    new_keyring,
    next_wake,
    prune,
    rekey,
    rotate,
    rotation_due_at,
    with_svid_ttl,
)
from .keys import Algorithm, new_signing_key
from .keystore import KeyStore

log = logging.getLogger(__name__)

JWT_SVID_USE = "jwt-svid"
OIDC_USE = "sig"


class Authority:
    def __init__(
        self,
        *,
        trust_domain: str,
        algorithm: Algorithm,
        svid_ttl: float,
        rotation_interval: float,
        issuer: str | None,
        state_dir: Path | None,
    ) -> None:
        if svid_ttl <= 0 or rotation_interval <= 0:
            raise ValueError("svid_ttl and rotation_interval must be positive")
        self.trust_domain = trust_domain
        self.algorithm = algorithm
        self.svid_ttl = svid_ttl
        self.rotation_interval = rotation_interval
        self.issuer = jwt_svid.check_issuer(issuer) if issuer else None
        self._store = KeyStore(state_dir) if state_dir is not None else None
        self._ring: Keyring | None = None
        self._changed = asyncio.Event()

    @property
    def ring(self) -> Keyring:
        if self._ring is None:
            raise RuntimeError("authority not loaded")
        return self._ring

    @property
    def trust_domain_id(self) -> str:
        return f"spiffe://{self.trust_domain}"

    def load(self, now: float) -> None:
        """Load the stored keyring (or keep the one in memory) or create a new one."""
        ring = self._store.load() if self._store is not None else self._ring
        if ring is None:
            ring = new_keyring(
                new_signing_key(self.algorithm, now),
                new_signing_key(self.algorithm, now),
                now,
                self.svid_ttl,
            )
            log.info("signing keys created", extra={"fields": {"kid": ring.active.kid}})
        else:
            ring = with_svid_ttl(prune(ring, now), self.svid_ttl)
            log.info("signing keys loaded", extra={"fields": {"kid": ring.active.kid}})
            if ring.active.algorithm != self.algorithm:
                ring = rekey(
                    ring,
                    now,
                    new_signing_key(self.algorithm, now),
                    new_signing_key(self.algorithm, now),
                    self.svid_ttl,
                )
        self._commit(ring)

    def _commit(self, ring: Keyring) -> None:
        changed = self._ring is None or ring != self._ring
        self._ring = ring
        if not changed:
            return
        if self._store is not None:
            self._store.save(ring)
        self._changed.set()
        self._changed = asyncio.Event()

    def issue(self, spiffe_id: str, audiences: Sequence[str], now: float) -> tuple[str, float]:
        """A signed JWT-SVID and its expiry."""
        claims = jwt_svid.svid_claims(spiffe_id, audiences, now, self.svid_ttl, self.issuer)
        return jwt_svid.mint(self.ring.active, claims), float(claims["exp"])

    def validate(self, token: str, audience: str) -> dict[str, Any]:
        return jwt_svid.validate(token, audience, self.ring, self.trust_domain)

    def rotate(self, now: float) -> None:
        ring = rotate(
            prune(self.ring, now), now, new_signing_key(self.algorithm, now), self.svid_ttl
        )
        log.info("signing key rotated", extra={"fields": {"kid": ring.active.kid}})
        self._commit(ring)

    def advance(self, now: float) -> None:
        """Apply what is due: drop expired retired keys, rotate when the interval passed."""
        ring = prune(self.ring, now)
        if now >= rotation_due_at(ring, self.rotation_interval):
            ring = rotate(ring, now, new_signing_key(self.algorithm, now), self.svid_ttl)
            log.info("signing key rotated", extra={"fields": {"kid": ring.active.kid}})
        self._commit(ring)

    def next_wake(self) -> float:
        return next_wake(self.ring, self.rotation_interval)

    @property
    def sequence(self) -> int:
        return self.ring.sequence

    async def wait_for_change(self, seen_sequence: int) -> None:
        """Return once the published keys differ from ``seen_sequence``."""
        while self.ring.sequence == seen_sequence:
            await self._changed.wait()

    def jwt_bundle(self) -> bytes:
        """This trust domain's JWT bundle as the Workload API serves it."""
        ring = self.ring
        document = {
            "keys": [key.public_jwk(JWT_SVID_USE) for key in ring.published],
            "spiffe_sequence": ring.sequence,
            "spiffe_refresh_hint": max(1, int(min(self.svid_ttl, 300))),
        }
        return json.dumps(document).encode()

    def published_algorithms(self) -> list[str]:
        return sorted({key.algorithm for key in self.ring.published})

    def oidc_jwks(self) -> dict[str, Any]:
        """The JWKS an OIDC discovery provider serves: the same keys, ``use: sig``, ``alg``."""
        keys = []
        for key in self.ring.published:
            jwk = key.public_jwk(OIDC_USE)
            jwk["alg"] = key.algorithm
            keys.append(jwk)
        return {"keys": keys}
