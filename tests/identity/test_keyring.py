"""Rotation with overlap, as pure transitions; a property test plays random schedules."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from grantbox.identity_agent.keyring import (
    Keyring,
    new_keyring,
    next_wake,
    prune,
    rekey,
    rotate,
    rotation_due_at,
    with_svid_ttl,
)
from grantbox.identity_agent.keys import SigningKey, new_signing_key

# Key generation is slow enough to matter under hypothesis: reuse a pool of real keys.
_POOL = [new_signing_key("ES256", 0.0) for _ in range(4)]
_COUNTER = iter(range(10**9))


def fresh(now: float) -> SigningKey:
    base = _POOL[next(_COUNTER) % len(_POOL)]
    return SigningKey(
        kid=f"k{next(_COUNTER)}", algorithm="ES256", private_key=base.private_key, created_at=now
    )


def ring_at(now: float, ttl: float = 300.0) -> Keyring:
    return new_keyring(fresh(now), fresh(now), now, ttl)


def test_new_keyring_publishes_active_and_upcoming() -> None:
    ring = ring_at(100.0)
    assert ring.active.activated_at == 100.0
    assert ring.upcoming.activated_at is None
    assert ring.published == (ring.active, ring.upcoming)
    assert ring.sequence == 1


def test_rotation_promotes_the_published_upcoming_key() -> None:
    ring = ring_at(0.0)
    rotated = rotate(ring, 50.0, fresh(50.0), 300.0)
    assert rotated.active.kid == ring.upcoming.kid
    assert rotated.active.activated_at == 50.0
    assert rotated.retired[0].kid == ring.active.kid
    assert rotated.retired[0].drop_after == 350.0
    assert rotated.sequence == ring.sequence + 1
    assert {k.kid for k in ring.published} <= {k.kid for k in rotated.published}


def test_retired_key_is_dropped_only_after_its_last_svid_expired() -> None:
    rotated = rotate(ring_at(0.0), 50.0, fresh(50.0), 300.0)
    assert prune(rotated, 349.9) is rotated
    pruned = prune(rotated, 350.0)
    assert pruned.retired == ()
    assert pruned.sequence == rotated.sequence + 1


def test_next_wake_is_the_earliest_of_rotation_and_drop() -> None:
    ring = ring_at(0.0)
    assert next_wake(ring, 1000.0) == 1000.0 == rotation_due_at(ring, 1000.0)
    rotated = rotate(ring, 10.0, fresh(10.0), 300.0)
    assert next_wake(rotated, 1000.0) == 310.0
    assert next_wake(rotated, 100.0) == 110.0


def test_ttl_bound_only_grows() -> None:
    ring = ring_at(0.0, ttl=300.0)
    assert with_svid_ttl(ring, 60.0) is ring
    assert with_svid_ttl(ring, 900.0).max_svid_ttl == 900.0


def test_rekey_drops_the_unused_upcoming_key_and_retires_the_active_one() -> None:
    ring = ring_at(0.0)
    a, b = fresh(5.0), fresh(5.0)
    changed = rekey(ring, 5.0, a, b, 300.0)
    assert changed.active.kid == a.kid and changed.upcoming.kid == b.kid
    assert [k.kid for k in changed.retired] == [ring.active.kid]
    assert ring.upcoming.kid not in {k.kid for k in changed.published}


@dataclass
class Issued:
    kid: str
    exp: float


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["sign", "rotate", "tick"]), st.floats(0.0, 400.0)),
        max_size=40,
    ),
    st.floats(1.0, 600.0),
    st.floats(1.0, 1000.0),
)
def test_every_unexpired_svid_stays_verifiable(
    steps: list[tuple[str, float]], ttl: float, interval: float
) -> None:
    """Whatever the order of signing, forced rotations and scheduled ticks, any SVID that has
    not expired is signed by a published key, and the upcoming key is published first."""
    now = 0.0
    ring = ring_at(now, ttl)
    issued: list[Issued] = []
    for action, gap in steps:
        now += gap
        ring = prune(ring, now)
        if action == "sign":
            issued.append(Issued(ring.active.kid, now + ttl))
        elif action == "rotate" or now >= rotation_due_at(ring, interval):
            before = ring.upcoming.kid
            ring = rotate(ring, now, fresh(now), ttl)
            assert ring.active.kid == before
        published = {k.kid for k in ring.published}
        for svid in issued:
            if svid.exp > now:
                assert svid.kid in published
        assert ring.active.kid != ring.upcoming.kid
