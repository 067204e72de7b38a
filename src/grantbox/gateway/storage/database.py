"""Opening the store: engine settings per backend and migrations to head.

SQLite runs in WAL mode with ``synchronous=FULL`` so an acknowledged write survives a
killed process; foreign keys are enforced on every connection.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from ..state_dir import create_private_file, make_private_dir

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
MIGRATION_LOCK = 0x6772_616E_7462  # "grantb": any constant shared by all replicas
_MIGRATING = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
    finally:
        cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their directory created first."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "database URL is not a URL (expected e.g. sqlite:////path/grantbox.db or "
            "postgresql://user@host/db)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            # SQLite gives the -wal and -shm files the database file's mode, so creating the
            # database 0600 first keeps all three private whatever the umask.
            database = Path(parsed.database)
            make_private_dir(database.parent)
            create_private_file(database)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    try:
        return create_engine(url, pool_pre_ping=True)
    except NoSuchModuleError:
        raise ValueError(
            f"unsupported database '{parsed.drivername}'; use sqlite or postgresql"
        ) from None
    except ImportError as exc:
        if parsed.get_backend_name() == "postgresql":
            raise RuntimeError(
                "PostgreSQL storage needs the psycopg driver, which is not installed; "
                "install grantbox[postgresql] (pip install 'grantbox[postgresql]')"
            ) from None
        raise RuntimeError(
            f"the database driver for {parsed.drivername} is not installed ({exc.name})"
        ) from None


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent).

    On PostgreSQL a transaction-scoped advisory lock makes replicas that start together
    migrate one after the other instead of racing on the same DDL; within one process a
    lock does the same (Alembic's context is process-global).
    """
    with _MIGRATING, engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
