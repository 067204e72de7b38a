"""The store and the services on it, on SQLite and on a real PostgreSQL server.

Two ``Store`` objects on one database stand for two gateway replicas: they share no
in-process lock, so only the database's ``resource_version`` guard keeps them honest.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError

from grantbox.gateway.catalog import Catalog, load_builtins
from grantbox.gateway.changes import ChangeFeed
from grantbox.gateway.credentials import CredentialSealer, CredentialSealError
from grantbox.gateway.errors import AmbiguousGrants, InUse, StaleVersion
from grantbox.gateway.services import ProfileService, ProviderService, SandboxService
from grantbox.gateway.storage import (
    AttachmentRow,
    Base,
    EventBatchRow,
    EventTextRow,
    LogRow,
    ProfileRow,
    ProviderRow,
    SandboxRow,
    Store,
    make_engine,
    migrate,
)
from grantbox.gateway.storage.database import alembic_config
from tests.support.gateway_postgres import reset_database
from tests.support.gateway_server import grant_profile


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    url: str = request.getfixturevalue("postgres_url")
    reset_database(url)
    return url


class Replica:
    """The services of one gateway process over a shared database."""

    def __init__(self, url: str, key: bytes) -> None:
        self.store = Store.open(url)
        catalog = Catalog(load_builtins())
        feed = ChangeFeed()
        self.profiles = ProfileService(self.store, catalog, feed)
        self.providers = ProviderService(self.store, catalog, CredentialSealer(key), feed)
        self.sandboxes = SandboxService(self.store, catalog, feed, stale_after=30)


@pytest.fixture
def key() -> bytes:
    from cryptography.fernet import Fernet

    return Fernet.generate_key()


@pytest.fixture
def replicas(db_url: str, key: bytes) -> Iterator[tuple[Replica, Replica]]:
    a, b = Replica(db_url, key), Replica(db_url, key)
    yield a, b
    a.store.close()
    b.store.close()


def test_migrations_are_idempotent_and_match_the_models(db_url: str) -> None:
    store = Store.open(db_url)
    migrate(store.engine)
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    store.close()
    assert diff == []


def test_profile_versions_move_and_stale_updates_are_refused(
    replicas: tuple[Replica, Replica],
) -> None:
    a, _ = replicas
    [record] = a.profiles.import_profiles([grant_profile("alpha")])
    assert record.resource_version == 1
    changed = grant_profile("alpha", audience="v2") | {"resource_version": 1}
    assert a.profiles.update("alpha", changed).resource_version == 2
    with pytest.raises(StaleVersion):
        a.profiles.update("alpha", grant_profile("alpha", audience="v3") | {"resource_version": 1})
    grant = a.profiles.get("alpha").profile.credentials[0].token_grant
    assert grant is not None
    assert grant.audience == "v2"


def test_two_replicas_racing_on_one_version_exactly_one_wins(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    a.profiles.import_profiles([grant_profile("alpha")])
    for version in range(1, 6):
        barrier = threading.Barrier(2)

        def update(
            replica: Replica, audience: str, v: int = version, gate: threading.Barrier = barrier
        ) -> str:
            gate.wait()
            doc = grant_profile("alpha", audience=audience) | {"resource_version": v}
            try:
                replica.profiles.update("alpha", doc)
            except StaleVersion:
                return "stale"
            return "ok"

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(update, [a, b], [f"a{version}", f"b{version}"]))
        assert outcomes == ["ok", "stale"]
        assert a.profiles.get("alpha").resource_version == version + 1


def test_the_database_guard_refuses_a_write_based_on_an_old_read(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    a.profiles.import_profiles([grant_profile("alpha")])

    def write_after_someone_else() -> None:
        with a.store.write() as session_a:
            row_a = session_a.get(ProfileRow, "alpha")
            assert row_a is not None
            with b.store.write() as session_b:
                row_b = session_b.get(ProfileRow, "alpha")
                assert row_b is not None
                row_b.updated_at += 1
            row_a.updated_at += 2

    with pytest.raises(StaleVersion):
        write_after_someone_else()
    assert a.profiles.get("alpha").resource_version == 2


def _setup_sandbox(replica: Replica) -> None:
    replica.profiles.import_profiles(
        [grant_profile("alpha", path="/v1/**"), grant_profile("beta", path="/v2/**")]
    )
    replica.providers.create("pa", "alpha", True, {})
    replica.providers.create("pb", "beta", True, {})
    replica.sandboxes.create("box", ["pa", "pb"], None, ["true"])


def test_refused_provider_update_writes_nothing(replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    _setup_sandbox(a)
    before = a.sandboxes.get("box")
    with pytest.raises(AmbiguousGrants) as refused:
        a.providers.update("pb", 1, profile_id="alpha")
    assert "sandbox 'box'" in refused.value.message
    assert "'pa:access_token'" in refused.value.message
    assert "'pb:access_token'" in refused.value.message
    with a.store.read() as session:
        row = session.get(ProviderRow, "pb")
        assert row is not None
        assert (row.profile_id, row.resource_version) == ("beta", 1)
    assert a.sandboxes.get("box").revision == before.revision


def test_refused_profile_update_writes_nothing(replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    _setup_sandbox(a)
    with pytest.raises(AmbiguousGrants) as refused:
        a.profiles.update("beta", grant_profile("beta", path="/v1/**") | {"resource_version": 1})
    assert "sandbox 'box'" in refused.value.message
    record = a.profiles.get("beta")
    assert (record.resource_version, record.profile.endpoints[0].path) == (1, "/v2/**")


def test_static_credentials_are_sealed_at_rest(
    replicas: tuple[Replica, Replica], db_url: str
) -> None:
    a, _ = replicas
    a.providers.create("gh", "github", False, {"token": "ghp_plaintextsecret123"})
    with a.store.read() as session:
        dump = " ".join(
            str(v) for row in session.execute(text("SELECT * FROM providers")) for v in row
        )
        row = session.get(ProviderRow, "gh")
        assert row is not None
        sealed = row.sealed_credentials
    assert "ghp_plaintextsecret123" not in dump
    assert sealed is not None
    from cryptography.fernet import Fernet

    with pytest.raises(CredentialSealError):
        CredentialSealer(Fernet.generate_key()).open(sealed)
    assert a.providers.get("gh").credentials == ("token",)


def test_attached_providers_cannot_be_deleted_and_sandboxes_cascade(
    replicas: tuple[Replica, Replica],
) -> None:
    a, _ = replicas
    _setup_sandbox(a)
    with pytest.raises(InUse):
        a.providers.delete("pa")
    with pytest.raises(IntegrityError), a.store.engine.begin() as connection:
        connection.execute(delete(ProviderRow).where(ProviderRow.name == "pa"))
    sandbox_id = a.sandboxes.get("box").id
    a.sandboxes.append_logs(sandbox_id, [{"message": "hello", "stream": "agent"}])
    a.sandboxes.remove(sandbox_id)
    with a.store.read() as session:
        counts: dict[str, Any] = {
            table.__name__: session.scalar(select(func.count()).select_from(table))
            for table in (SandboxRow, AttachmentRow, LogRow)
        }
    assert counts == {"SandboxRow": 0, "AttachmentRow": 0, "LogRow": 0}
    a.providers.delete("pa")


def test_an_ambiguous_stored_set_is_never_served_to_a_supervisor(
    replicas: tuple[Replica, Replica],
) -> None:
    """A race between replicas (attach on one, profile change on the other) could store an
    ambiguous set; the config read refuses it instead of letting the proxy pick."""
    a, _ = replicas
    a.profiles.import_profiles([grant_profile("alpha", path="/v1/**")])
    a.profiles.import_profiles([grant_profile("clash", path="/v1/**")])
    a.providers.create("pa", "alpha", True, {})
    a.providers.create("pc", "clash", True, {})
    a.sandboxes.create("box", ["pa"], None, [])
    sandbox_id = a.sandboxes.get("box").id
    with a.store.write() as session:  # what the losing side of such a race leaves behind
        session.add(AttachmentRow(sandbox_id=sandbox_id, provider_name="pc"))
    with pytest.raises(AmbiguousGrants) as refused:
        a.sandboxes.config(sandbox_id)
    assert "config refused: sandbox 'box'" in refused.value.message
    assert "'pa:access_token' and 'pc:access_token'" in refused.value.message


def test_profile_import_checks_sandboxes_whose_provider_awaits_that_profile(
    replicas: tuple[Replica, Replica],
) -> None:
    """Across replicas, a provider can outlive its profile (delete on one replica while the
    provider is created on another). Re-importing that profile id must then pass the same
    ambiguity check as an update, against every sandbox the provider is attached to."""
    a, _ = replicas
    a.profiles.import_profiles([grant_profile("alpha", path="/v1/**")])
    a.providers.create("pa", "alpha", True, {})
    a.sandboxes.create("box", ["pa"], None, [])
    sandbox_id = a.sandboxes.get("box").id
    with a.store.write() as session:  # the state such a race leaves behind
        session.add(
            ProviderRow(
                name="pd",
                profile_id="delta",
                runtime_credentials=True,
                credential_names="[]",
                created_at=0.0,
                updated_at=0.0,
            )
        )
        session.flush()
        session.add(AttachmentRow(sandbox_id=sandbox_id, provider_name="pd"))
    box = a.sandboxes.get("box")
    assert (box.phase.value, box.revision) == ("error", "")
    assert (
        "configuration incomplete: profile 'delta' of provider 'pd' not found" in box.phase_reason
    )
    with pytest.raises(AmbiguousGrants) as refused:
        a.profiles.import_profiles([grant_profile("delta", path="/v1/**")])
    assert "profile import refused: sandbox 'box'" in refused.value.message
    assert "'pa:access_token' and 'pd:access_token'" in refused.value.message
    with a.store.read() as session:
        assert session.get(ProfileRow, "delta") is None
    a.profiles.import_profiles([grant_profile("delta", path="/v2/**")])


def test_logs_keep_the_newest_lines_of_each_sandbox(replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    a.sandboxes.log_retention = 5
    a.sandboxes.create("one", [], None, [])
    a.sandboxes.create("two", [], None, [])
    one, two = a.sandboxes.get("one").id, a.sandboxes.get("two").id
    a.sandboxes.append_logs(two, [{"message": f"two {i}"} for i in range(3)])
    for i in range(12):
        a.sandboxes.append_logs(one, [{"message": f"one {i}"}])
    assert [x["message"] for x in a.sandboxes.log_page(one).items] == [
        f"one {i}" for i in range(7, 12)
    ]
    assert len(a.sandboxes.log_page(two).items) == 3


def test_events_keep_the_newest_of_each_sandbox(replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    a.sandboxes.log_retention = 4
    a.sandboxes.create("one", [], None, [])
    a.sandboxes.create("two", [], None, [])
    one, two = a.sandboxes.get("one").id, a.sandboxes.get("two").id
    a.sandboxes.append_events(two, [{"kind": "http", "n": i} for i in range(2)])
    for i in range(10):
        a.sandboxes.append_events(one, [{"kind": "http", "n": i}])
    assert [e["data"]["n"] for e in a.sandboxes.event_page(one).items] == [6, 7, 8, 9]
    assert len(a.sandboxes.event_page(two).items) == 2


def _events(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"kind": "http", "n": start + i} for i in range(count)]


def test_events_are_numbered_without_gaps_and_paged_across_batches(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    a.sandboxes.create("one", [], None, [])
    a.sandboxes.create("two", [], None, [])
    one, two = a.sandboxes.get("one").id, a.sandboxes.get("two").id
    a.sandboxes.append_events(one, _events(3))
    a.sandboxes.append_events(two, _events(2, 100))
    b.sandboxes.append_events(one, _events(4, 3))  # another replica continues the numbering
    a.sandboxes.append_events(one, [])
    page = a.sandboxes.event_page(one)
    assert [(e["seq"], e["data"]["n"]) for e in page.items] == [(n + 1, n) for n in range(7)]
    assert [e["seq"] for e in a.sandboxes.event_page(two).items] == [1, 2]
    assert [e["seq"] for e in a.sandboxes.event_page(one, after=2, limit=3).items] == [3, 4, 5]
    tail = a.sandboxes.event_page(one, after=1, tail=2)
    assert ([e["seq"] for e in tail.items], tail.omitted) == ([6, 7], 4)
    assert a.sandboxes.event_page(one, after=7).items == []


def test_events_since_a_time_are_chosen_one_by_one_inside_a_batch(
    replicas: tuple[Replica, Replica],
) -> None:
    a, _ = replicas
    a.sandboxes.create("one", [], None, [])
    one = a.sandboxes.get("one").id
    now = time.time()
    a.sandboxes.append_events(one, [{"kind": "http", "ts": now - 60 + i} for i in range(10)])
    page = a.sandboxes.event_page(one, since=now - 53)
    assert [e["seq"] for e in page.items] == [8, 9, 10]
    assert [e["data"]["ts"] for e in page.items] == [now - 53, now - 52, now - 51]


def test_event_retention_cuts_inside_a_batch(replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    a.sandboxes.log_retention = 2500
    a.sandboxes.create("one", [], None, [])
    one = a.sandboxes.get("one").id
    for start in (0, 1000, 2000):
        a.sandboxes.append_events(one, _events(1000, start))
    kept = a.sandboxes.event_page(one).items
    assert (len(kept), kept[0]["seq"], kept[-1]["seq"]) == (2500, 501, 3000)
    assert kept[0]["data"]["n"] == 500
    a.sandboxes.append_events(one, _events(1000, 3000))
    kept = a.sandboxes.event_page(one).items
    assert (len(kept), kept[0]["seq"], kept[-1]["seq"]) == (2500, 1501, 4000)
    with a.store.read() as session:  # whole batches left the store, the cut one stayed
        assert session.scalar(select(func.count()).select_from(EventBatchRow)) == 3
        assert session.scalar(select(func.count()).select_from(EventTextRow)) == 3
    a.sandboxes.log_retention = 0  # nothing kept, yet the numbering goes on
    a.sandboxes.append_events(one, _events(2))
    assert a.sandboxes.event_page(one).items == []
    a.sandboxes.log_retention = 10
    a.sandboxes.append_events(one, _events(1))
    assert [e["seq"] for e in a.sandboxes.event_page(one).items] == [4003]


def test_two_replicas_appending_to_one_sandbox_never_share_a_number(
    postgres_url: str, key: bytes
) -> None:
    reset_database(postgres_url)
    a, b = Replica(postgres_url, key), Replica(postgres_url, key)
    try:
        a.sandboxes.create("one", [], None, [])
        one = a.sandboxes.get("one").id
        barrier = threading.Barrier(2)

        def ship(replica: Replica) -> None:
            barrier.wait()
            for _ in range(25):
                replica.sandboxes.append_events(one, _events(3))

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(ship, [a, b]))
        seqs = [e["seq"] for e in a.sandboxes.event_page(one).items]
        assert seqs == list(range(1, 151))
    finally:
        a.store.close()
        b.store.close()


def test_stored_events_survive_the_move_to_batches_with_their_numbers(db_url: str) -> None:
    from alembic import command

    store = Store(make_engine(db_url))
    config = alembic_config(store.engine)
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0004_followup")
    with store.engine.begin() as connection:
        for sandbox_id in ("s1", "s2"):
            connection.execute(
                text(
                    "INSERT INTO sandboxes (id, name, policy, command, resource_version,"
                    " created_at, updated_at) VALUES (:id, :id, '', '[]', 1, 0, 0)"
                ),
                {"id": sandbox_id},
            )
        for seq, sandbox_id in [(1, "s1"), (2, "s2"), (3, "s1"), (7, "s1")]:
            connection.execute(
                text(
                    "INSERT INTO sandbox_events (seq, sandbox_id, ts, kind, data)"
                    " VALUES (:seq, :sid, :ts, :kind, :data)"
                ),
                {
                    "seq": seq,
                    "sid": sandbox_id,
                    "ts": 1_700_000_000.0 + seq,
                    "kind": 'it\'s "quoted"',
                    "data": json.dumps({"n": seq, "text": "ünï\n"}),
                },
            )
    migrate(store.engine)
    service = SandboxService(store, Catalog(load_builtins()), ChangeFeed(), stale_after=30)
    items = service.event_page("s1").items
    assert [(e["seq"], e["data"]["n"], e["kind"]) for e in items] == [
        (1, 1, 'it\'s "quoted"'),
        (3, 3, 'it\'s "quoted"'),
        (7, 7, 'it\'s "quoted"'),
    ]
    assert items[0]["data"]["text"] == "ünï\n"
    assert items[0]["time"].startswith("2023-11-14T22:13:2")
    assert [e["seq"] for e in service.event_page("s1", after=3).items] == [7]
    service.append_events("s1", _events(2))
    assert [e["seq"] for e in service.event_page("s1", after=3).items] == [7, 8, 9]
    assert [e["seq"] for e in service.event_page("s2").items] == [2]

    with store.engine.begin() as connection:  # and back: one row per kept event
        config.attributes["connection"] = connection
        command.downgrade(config, "0004_followup")
    with store.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT sandbox_id, kind, data FROM sandbox_events ORDER BY seq")
        ).all()
    assert [(r.sandbox_id, json.loads(r.data).get("n")) for r in rows] == [
        ("s1", 1), ("s1", 3), ("s1", 7), ("s1", 0), ("s1", 1), ("s2", 2)
    ]  # fmt: skip
    store.close()


def test_stores_opened_together_migrate_once(db_url: str) -> None:
    with ThreadPoolExecutor(3) as pool:
        stores = list(pool.map(lambda _: Store.open(db_url), range(3)))
    for store in stores:
        store.ping()
        store.close()
    check = Store.open(db_url)
    with check.engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    head = ScriptDirectory.from_config(alembic_config(check.engine)).get_current_head()
    check.close()
    assert version == [(head,)]
