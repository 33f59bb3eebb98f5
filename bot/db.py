"""Engine and session factory, built from a database URL (no module-level engine)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

# What a unit of work raises when the database cannot be reached: the server is down or
# restarting, the connection was cut, the pool waited in vain. The work was rolled back
# (or, if the connection died during COMMIT itself, its fate is unknown).
UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs written the usual way (postgres://, postgresql://)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, **kwargs) -> Engine:
    """Create the engine; SQLite gets foreign keys, WAL and a busy timeout for threads."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
    engine = create_engine(url, **kwargs)
    if engine.dialect.name != "sqlite" and not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if url not in ("sqlite://", "sqlite:///:memory:"):
                cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

    return engine


# A pooled connection unused this long is pinged before it is handed out (a database restart
# or a dropped idle connection is then replaced without an error). SQLAlchemy's pool_pre_ping
# pings on every checkout: a round trip for each of the several sessions a Slack request
# opens, which under a burst of requests cost a fifth of the time to the ack. A connection
# used moments ago is handed out as it is; if the database went away since, that request
# fails once and SQLAlchemy invalidates the whole pool, as it does for a failure mid-request.
PING_AFTER_IDLE = 2.0


def _ping_when_idle(engine: Engine) -> None:
    from time import monotonic

    from sqlalchemy import exc

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):  # pragma: no cover - trivial
        record.info["closeloop_idle_since"] = monotonic()

    @event.listens_for(engine, "checkout")
    def _maybe_ping(dbapi_conn, record, _proxy):
        idle_since = record.info.get("closeloop_idle_since")
        if idle_since is None or monotonic() - idle_since < PING_AFTER_IDLE:
            return  # new, or used moments ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as err:
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError(f"pooled connection is dead: {err}") from err


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block ends cleanly, roll back when it raises."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def in_transaction(factory: sessionmaker[Session], work, *, attempts: int = 3):
    """Run ``work(session)`` in its own transaction, again when a concurrent writer made it
    conflict (a unique constraint hit by a racing insert); return what ``work`` returned."""
    from sqlalchemy.exc import IntegrityError

    for attempt in range(attempts):
        try:
            with session_scope(factory) as session:
                return work(session)
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
