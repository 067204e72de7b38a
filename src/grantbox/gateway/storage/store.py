"""Sessions and the write path: one place that turns database conflicts into 409s.

All configuration writes in one gateway process go through :meth:`Store.write`, which holds
a process-wide lock while it validates and commits, so a validation (for example the
ambiguity check) and the write it guards see the same state. Across processes the
``resource_version`` guard on every record refuses the loser of a race.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from grantbox.gateway.errors import Conflict, StaleVersion

from .database import make_engine, migrate


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_lock = threading.RLock()

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect and migrate to the newest schema."""
        engine = make_engine(url)
        migrate(engine)
        return cls(engine)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success; conflicts become :class:`Conflict`."""
        with self._write_lock, self._sessions() as session:
            try:
                with session.begin():
                    yield session
            except StaleDataError:
                raise StaleVersion(
                    "the record was changed by someone else; fetch it again and retry"
                ) from None
            except IntegrityError as exc:
                raise Conflict(
                    f"the write conflicts with stored data: {_constraint(exc)}"
                ) from None

    def ping(self) -> None:
        with self._sessions() as session:
            session.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()


def _constraint(exc: IntegrityError) -> str:
    text_ = str(exc.orig).splitlines()[0] if exc.orig is not None else "constraint violated"
    return " ".join(text_.split())[:200]
