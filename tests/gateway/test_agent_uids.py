"""DESIGN §3.5 #8: every live sandbox's agent gets a kernel uid no other live sandbox holds."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic import command
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from grantbox.gateway.agent_ids import UidRange, choose_free, lowest_free, parse_uid_range
from grantbox.gateway.catalog import Catalog, load_builtins
from grantbox.gateway.changes import ChangeFeed
from grantbox.gateway.errors import GatewayError
from grantbox.gateway.services import SandboxService
from grantbox.gateway.settings import GatewaySettings
from grantbox.gateway.storage import Store
from grantbox.gateway.storage.database import alembic_config, make_engine
from tests.support.gateway_postgres import reset_database

SMALL = UidRange(2_000_000, 3)


def test_range_parsing_and_bounds() -> None:
    assert parse_uid_range("1900000000:65536") == UidRange()
    assert parse_uid_range(" 70000:10 ") == UidRange(70000, 10)
    for bad in ("", "70000", "70000-70010", "-5:3", "x:1", "70000:0"):
        with pytest.raises(ValueError, match="agent uid"):
            parse_uid_range(bad)
    for first, count in ((0, 10), (1000, 10), (65534, 1), (2**31 - 2, 2)):
        with pytest.raises(ValueError, match="must lie between"):
            UidRange(first, count)


def test_settings_take_the_range_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GRANTBOX_AGENT_UIDS", "3000000:16")
    settings = GatewaySettings.from_env(state_dir=tmp_path, config_dir=tmp_path)
    assert settings.agent_uids == UidRange(3_000_000, 16)
    monkeypatch.setenv("GRANTBOX_AGENT_UIDS", "nonsense")
    with pytest.raises(ValueError, match="FIRST:COUNT"):
        GatewaySettings.from_env(state_dir=tmp_path, config_dir=tmp_path)


@given(st.sets(st.integers(SMALL.first - 2, SMALL.last + 2)))
def test_lowest_free_is_the_smallest_unused_uid_in_range(taken: set[int]) -> None:
    chosen = lowest_free(SMALL, taken)
    free = [uid for uid in range(SMALL.first, SMALL.last + 1) if uid not in taken]
    assert chosen == (free[0] if free else None)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    url: str = request.getfixturevalue("postgres_url")
    reset_database(url)
    return url


def _service(store: Store, ids: UidRange = SMALL) -> SandboxService:
    return SandboxService(store, Catalog(load_builtins()), ChangeFeed(), 30, ids)


@pytest.fixture
def stores(db_url: str) -> Iterator[tuple[Store, Store]]:
    a, b = Store.open(db_url), Store.open(db_url)
    yield a, b
    a.close()
    b.close()


def test_uids_are_distinct_reused_after_delete_and_run_out_clearly(
    stores: tuple[Store, Store],
) -> None:
    service = _service(stores[0])
    made = [service.create(f"s{i}", [], None, []) for i in range(3)]
    assert [v.agent_uid for v in made] == [SMALL.first, SMALL.first + 1, SMALL.first + 2]
    assert service.config(made[1].id).agent_uid == SMALL.first + 1
    assert service.get("s1").to_dict()["agent_uid"] == SMALL.first + 1
    with pytest.raises(GatewayError, match="every agent uid of 2000000-2000002 is in use"):
        service.create("s3", [], None, [])
    # Freed only when the row goes, which the orchestrator does after the driver confirmed.
    service.mark_deleting("s1")
    with pytest.raises(GatewayError, match="in use"):
        service.create("s3", [], None, [])
    service.remove(made[1].id)
    assert service.create("s3", [], None, []).agent_uid == SMALL.first + 1


def test_replicas_creating_together_never_share_a_uid(stores: tuple[Store, Store]) -> None:
    ids = UidRange(2_000_000, 64)
    a, b = _service(stores[0], ids), _service(stores[1], ids)
    with ThreadPoolExecutor(8) as pool:
        views = list(
            pool.map(lambda i: (a if i % 2 else b).create(f"r{i}", [], None, []), range(24))
        )
    uids = [v.agent_uid for v in views]
    assert len(set(uids)) == 24 and all(uid in ids for uid in uids)


def test_upgrade_gives_existing_sandboxes_a_uid(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        for name in ("old-a", "old-b"):
            connection.execute(
                text(
                    "INSERT INTO sandboxes (id, name, policy, command, resource_version,"
                    " created_at, updated_at) VALUES (:id, :name, '{}', '[]', 1, 1.0, 1.0)"
                ),
                {"id": f"id-{name}", "name": name},
            )
    engine.dispose()
    store = Store.open(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        service = _service(store, UidRange())
        uids = {service.get(name).agent_uid for name in ("old-a", "old-b")}
        assert uids == {1_900_000_000, 1_900_000_001}
        assert service.create("new", [], None, []).agent_uid == 1_900_000_002
    finally:
        store.close()


def test_after_a_lost_race_the_pick_spreads_over_the_lowest_free_uids() -> None:
    ids = UidRange(2_000_000, 1000)
    taken = {2_000_000, 2_000_002}
    assert choose_free(ids, taken, 0) == 2_000_001
    rng = random.Random(7)
    picks = {choose_free(ids, taken, 1, rng) for _ in range(200)}
    assert len(picks) > 10
    assert all(p is not None and p in ids and p not in taken for p in picks)
    assert max(p for p in picks if p is not None) < 2_000_000 + 64 + len(taken)
    full = UidRange(2_000_000, 2)
    assert choose_free(full, {2_000_000, 2_000_001}, 3) is None
