"""Which keys sign and which are published, as pure transitions over a keyring value.

Three roles, like SPIRE's prepared/active/old keys:

* ``upcoming`` is published in the bundle before it ever signs, so relying parties that
  cache a JWKS already know it when it becomes active;
* ``active`` signs every new JWT-SVID;
* ``retired`` keys no longer sign but stay published until every SVID they signed has
  expired (``drop_after``), so rotation never invalidates a live SVID.

Every change to what is published bumps ``sequence`` (the bundle's ``spiffe_sequence``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .keys import SigningKey


@dataclass(frozen=True)
class Keyring:
    active: SigningKey
    upcoming: SigningKey
    retired: tuple[SigningKey, ...]
    sequence: int
    max_svid_ttl: float
    """The longest TTL any SVID of the active key may carry; decides how long it stays."""

    @property
    def published(self) -> tuple[SigningKey, ...]:
        """Keys a verifier must trust right now, newest role first."""
        return (self.active, self.upcoming, *self.retired)

    def find(self, kid: str) -> SigningKey | None:
        for key in self.published:
            if key.kid == kid:
                return key
        return None


def new_keyring(active: SigningKey, upcoming: SigningKey, now: float, svid_ttl: float) -> Keyring:
    return Keyring(
        active=replace(active, activated_at=now),
        upcoming=upcoming,
        retired=(),
        sequence=1,
        max_svid_ttl=svid_ttl,
    )


def _retire(key: SigningKey, now: float, ttl: float) -> SigningKey:
    return replace(key, retired_at=now, drop_after=now + ttl)


def rotate(ring: Keyring, now: float, fresh: SigningKey, svid_ttl: float) -> Keyring:
    """The upcoming key starts signing, the active one retires, ``fresh`` waits its turn."""
    return Keyring(
        active=replace(ring.upcoming, activated_at=now),
        upcoming=fresh,
        retired=(_retire(ring.active, now, ring.max_svid_ttl), *ring.retired),
        sequence=ring.sequence + 1,
        max_svid_ttl=svid_ttl,
    )


def rekey(
    ring: Keyring, now: float, active: SigningKey, upcoming: SigningKey, svid_ttl: float
) -> Keyring:
    """Replace both current keys at once (the algorithm changed); the old upcoming key never
    signed, so it is dropped rather than retired."""
    return Keyring(
        active=replace(active, activated_at=now),
        upcoming=upcoming,
        retired=(_retire(ring.active, now, ring.max_svid_ttl), *ring.retired),
        sequence=ring.sequence + 1,
        max_svid_ttl=svid_ttl,
    )


def with_svid_ttl(ring: Keyring, svid_ttl: float) -> Keyring:
    """Raise (never lower) the TTL bound: SVIDs already signed may carry the old, longer TTL."""
    if svid_ttl <= ring.max_svid_ttl:
        return ring
    return replace(ring, max_svid_ttl=svid_ttl)


def prune(ring: Keyring, now: float) -> Keyring:
    """Drop retired keys whose last SVID has expired."""
    kept = tuple(k for k in ring.retired if k.drop_after is None or k.drop_after > now)
    if kept == ring.retired:
        return ring
    return replace(ring, retired=kept, sequence=ring.sequence + 1)


def rotation_due_at(ring: Keyring, interval: float) -> float:
    activated = ring.active.activated_at
    return (activated if activated is not None else ring.active.created_at) + interval


def next_wake(ring: Keyring, interval: float) -> float:
    """The next moment something must change: a rotation or a retired key's drop."""
    moments = [rotation_due_at(ring, interval)]
    moments.extend(k.drop_after for k in ring.retired if k.drop_after is not None)
    return min(moments)
