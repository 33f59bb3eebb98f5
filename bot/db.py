"""Engine and session factory, built from a database URL (no module-level engine)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
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


# How long the database may keep a Slack request waiting (Slack gives up after 3 s; the
# person must hear "not saved, your text is still here" before then). See docs/operations.md.
CONNECT_TIMEOUT = 2  # s: a silent server (libpq's smallest connect_timeout)
STATEMENT_TIMEOUT_MS = 2000  # PostgreSQL: any one statement, lock waits included
LOCK_TIMEOUT_MS = 1500  # PostgreSQL: waiting for a lock another session holds
SQLITE_BUSY_TIMEOUT = 1.5  # s: waiting for another connection's write lock
POOL_TIMEOUT = 2  # s: waiting for a pooled connection when every one is in use
# Work nobody waits on (the scheduler's jobs, within bot.db.patient()): longer, per transaction.
PATIENT_STATEMENT_TIMEOUT_MS = 120_000
PATIENT_LOCK_TIMEOUT_MS = 30_000
PATIENT_SQLITE_BUSY_MS = 30_000
# Migrations: no statement or lock timeout (they wait for one another, bot.migrate).
PATIENT_CONNECT_TIMEOUT = 10

_PATIENT: ContextVar[bool] = ContextVar("closeloop_patient", default=False)


@contextmanager
def patient() -> Iterator[None]:
    """Within this block (this thread), transactions begun by sessions of
    :func:`make_session_factory` get the longer background limits."""
    token = _PATIENT.set(True)
    try:
        yield
    finally:
        _PATIENT.reset(token)


def be_patient() -> None:
    """From now on, this thread's transactions get the background limits (a one-off
    command's main thread; threads it starts later begin with the request limits)."""
    _PATIENT.set(True)


def patiently(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run within :func:`patient` (for a scheduler job)."""

    @wraps(fn)
    def run(*args, **kwargs):
        with patient():
            return fn(*args, **kwargs)

    return run


def make_engine(url: str, *, migrations: bool = False, **kwargs) -> Engine:
    """Create the engine; SQLite gets foreign keys, WAL and a busy timeout for threads.

    Every connection has the request limits above (``migrations``: no statement or lock
    timeout, a longer connect timeout and busy timeout)."""
    url = normalise_url(url)
    memory = url in ("sqlite://", "sqlite:///:memory:")
    if url.startswith("sqlite"):
        busy = PATIENT_SQLITE_BUSY_MS / 1000 if migrations else SQLITE_BUSY_TIMEOUT
        kwargs.setdefault("connect_args", {"timeout": busy, "check_same_thread": False})
    elif url.startswith("postgresql"):
        kwargs.setdefault("connect_args", _postgres_limits(url, migrations=migrations))
    if "poolclass" not in kwargs and not memory:
        kwargs.setdefault("pool_timeout", POOL_TIMEOUT)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name != "sqlite" and not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

    return engine


def _postgres_limits(url: str, *, migrations: bool) -> dict[str, Any]:
    """libpq parameters: the connect timeout, and the statement and lock timeouts as the
    session's defaults (``options``; they cost no round trip). An ``options`` already in the
    URL is kept, after ours (so it wins)."""
    if migrations:
        ours = "-c statement_timeout=0 -c lock_timeout=0"
        connect = PATIENT_CONNECT_TIMEOUT
    else:
        ours = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS}"
        connect = CONNECT_TIMEOUT
    query = make_url(url).query
    theirs = query.get("options")
    if isinstance(theirs, tuple):
        theirs = " ".join(theirs)
    args: dict[str, Any] = {"options": f"{ours} {theirs}" if theirs else ours}
    if "connect_timeout" not in query:
        args["connect_timeout"] = connect
    return args


def _limits_for_this_work(_session: Session, _transaction, connection: Connection) -> None:
    """A transaction begun within :func:`patient` gets the background limits (PostgreSQL:
    SET LOCAL, gone with the transaction); on SQLite the busy timeout belongs to the
    connection, so it is set back when a request's transaction gets that connection next."""
    wanted = _PATIENT.get()
    if connection.dialect.name == "postgresql":
        if wanted:
            connection.exec_driver_sql(
                f"SELECT set_config('statement_timeout', '{PATIENT_STATEMENT_TIMEOUT_MS}', true),"
                f" set_config('lock_timeout', '{PATIENT_LOCK_TIMEOUT_MS}', true)"
            )
    elif connection.dialect.name == "sqlite":
        if connection.info.get("closeloop_patient", False) != wanted:
            busy_ms = PATIENT_SQLITE_BUSY_MS if wanted else int(SQLITE_BUSY_TIMEOUT * 1000)
            connection.exec_driver_sql(f"PRAGMA busy_timeout = {busy_ms}")
            connection.info["closeloop_patient"] = wanted


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
    """Sessions that keep loaded objects usable after commit (and, within
    :func:`patient`, the background limits)."""
    factory = sessionmaker(engine, expire_on_commit=False)
    event.listen(factory, "after_begin", _limits_for_this_work)
    return factory


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
