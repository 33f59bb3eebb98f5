"""Alembic driven from code: no alembic.ini at the top level, the URL comes from Settings.

Processes that start together (several `closeloop run` or `closeloop migrate` at once on a
fresh database) migrate one at a time: on PostgreSQL each takes a session advisory lock on
its migration connection and holds it through ``alembic upgrade``; on SQLite, an exclusive
``flock`` on a file beside the database. Whoever comes second finds the schema at head and
does nothing.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, pool, text
from sqlalchemy.engine import make_url

import migrations
from bot.db import make_engine, normalise_url

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent

LOCK_KEY = 0x436C6D67  # "Clmg": the advisory lock id for migrations (bot.leader uses "Clos")


def alembic_config(database_url: str, connection=None) -> Config:
    """An Alembic Config for ``database_url`` (or an open ``connection``, used by tests)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(database_url).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(database_url: str, connection=None) -> None:
    """Bring the database to the newest schema, one process at a time."""
    if connection is not None:
        command.upgrade(alembic_config(database_url, connection), "head")
        return
    with migrating(database_url) as conn:
        command.upgrade(alembic_config(database_url, conn), "head")


def check(database_url: str, connection=None) -> None:
    """Raise if the models and the migrations disagree (``alembic check``)."""
    command.check(alembic_config(database_url, connection))


@contextmanager
def migrating(database_url: str) -> Iterator[Connection]:
    """A connection for migrations (no statement or lock timeout), holding the migration
    lock until the block ends."""
    url = make_url(normalise_url(database_url))
    with _file_lock(url.database if url.get_backend_name() == "sqlite" else None):
        engine = make_engine(database_url, migrations=True, poolclass=pool.NullPool)
        try:
            with engine.connect() as conn:
                if conn.dialect.name == "postgresql":
                    # Waits for a process migrating now; PostgreSQL drops the lock if we die.
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
                elif conn.dialect.name == "sqlite":
                    # A batch migration copies a table, drops it and renames the copy; with
                    # foreign keys enforced, dropping a table other rows refer to fails
                    # (Alembic's advice: off for the migration; this connection is discarded).
                    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()  # Alembic runs its own transactions on this connection
                try:
                    yield conn
                finally:
                    if conn.dialect.name == "postgresql":
                        conn.rollback()
                        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                        conn.commit()
        finally:
            engine.dispose()


@contextmanager
def _file_lock(database: str | None) -> Iterator[None]:
    """SQLite: an exclusive flock on ``<database>.migrate.lock`` (nothing for PostgreSQL or
    an in-memory database)."""
    if not database or database == ":memory:":
        yield
        return
    path = Path(database).with_suffix(Path(database).suffix + ".migrate.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # the kernel drops the lock with the descriptor
