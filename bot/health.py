"""GET /healthz: can a Slack request write to the database right now, answered in time.

``SELECT 1`` is not enough: it succeeds on a SQLite file another connection holds the write
lock of, and on a PostgreSQL server whose tables a migration or a stray ``LOCK TABLE`` has
locked, while every form would wait and fail. So the check asks for what a write needs
(SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the ROW EXCLUSIVE lock an INSERT takes, on every
table) with a short timeout, and rolls back. It runs on a thread of its own and the answer
waits for it at most :data:`WITHIN` seconds: a silent server (which only the connect timeout
ends) makes it 503 in time, and a check still under way is shared by the next requests
rather than started again, so health checks cannot take every thread.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, text

from bot.models import Base

log = logging.getLogger(__name__)

WITHIN = 1.5  # s: /healthz answers within 2 s
CHECK_TIMEOUT_MS = 1000  # the lock wait of the check itself

_lock = threading.Lock()
_running: WeakKeyDictionary[Engine, Future] = WeakKeyDictionary()


def database_writable(engine: Engine, *, within: float = WITHIN) -> bool:
    """Whether a write could start now; False (logged) when it cannot or no answer came in
    ``within`` seconds."""
    with _lock:
        check = _running.get(engine)
        if check is None or check.done():
            check = Future()
            _running[engine] = check
            threading.Thread(
                target=_run, args=(engine, check), name="health-check", daemon=True
            ).start()
    try:
        check.result(timeout=within)
        return True
    except FutureTimeout:
        log.warning("health check: the database did not answer within %.1f s", within)
    except Exception as err:
        log.warning("health check: the database cannot take a write: %s", _first_line(err))
    return False


def _run(engine: Engine, check: Future) -> None:
    try:
        _probe(engine)
    except BaseException as err:
        check.set_exception(err)
    else:
        check.set_result(None)


def _probe(engine: Engine) -> None:
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            before = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {CHECK_TIMEOUT_MS}")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            finally:
                conn.rollback()
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {before}")
        elif conn.dialect.name == "postgresql":
            conn.execute(
                text(
                    "SELECT set_config('statement_timeout', :t, true),"
                    " set_config('lock_timeout', :t, true)"
                ),
                {"t": str(CHECK_TIMEOUT_MS)},
            )
            tables = ", ".join(conn.dialect.identifier_preparer.quote(t) for t in _tables())
            conn.exec_driver_sql(f"LOCK TABLE {tables} IN ROW EXCLUSIVE MODE")
            conn.rollback()
        else:
            conn.execute(text("SELECT 1"))


def _tables() -> list[str]:
    return [table.name for table in Base.metadata.sorted_tables]


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
