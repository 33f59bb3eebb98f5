"""Exactly one process holds the scheduler role, whatever number of processes run.

APScheduler 3 cannot share a job store between processes, so each process runs a
:class:`SchedulerRole` thread that tries to take a database-wide lock every few seconds and
runs the scheduler only while it holds it: a PostgreSQL session advisory lock (released by
PostgreSQL the moment the holder's connection dies, so a survivor takes over within one poll),
or on SQLite, where every process shares one file, an exclusive ``flock`` on a file beside the
database. The tick the scheduler runs is idempotent and claims everything in the database, so
even a brief overlap during a takeover cannot send anything twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from bot import metrics

log = logging.getLogger(__name__)

LOCK_KEY = 0x436C6F73  # "Clos": the advisory lock id for the scheduler role


def poll_seconds_default() -> float:
    """How often the lock is tried and checked (CLOSELOOP_SCHEDULER_POLL; a takeover takes
    about this long)."""
    return float(os.environ.get("CLOSELOOP_SCHEDULER_POLL") or 10.0)


class _PostgresLock:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return self.still_held()
        conn = self._engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
            conn.commit()
        except Exception:
            conn.close()
            raise
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def still_held(self) -> bool:
        try:
            assert self._conn is not None
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
            return True
        except Exception:
            log.warning("lost the database connection that held the scheduler lock")
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                # A pooled connection would keep the session (and its lock) alive: unlock,
                # then drop the connection itself rather than returning it to the pool.
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            except Exception:
                pass
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:
                pass
            self._conn = None


class _FileLock:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the kernel drops the lock with the descriptor
            self._fd = None


def make_lock(engine: Engine):
    """The scheduler lock suited to ``engine``'s database."""
    if engine.dialect.name == "postgresql":
        return _PostgresLock(engine)
    database = engine.url.database
    if not database or database == ":memory:":
        return _FileLock(Path(os.environ.get("TMPDIR", "/tmp")) / f"closeloop-{os.getpid()}.lock")
    return _FileLock(Path(database).with_suffix(Path(database).suffix + ".scheduler.lock"))


class SchedulerRole:
    """A thread that takes the scheduler role when it can and gives it up when it must."""

    def __init__(
        self,
        *,
        engine: Engine,
        start_scheduler: Callable[[], object],
        poll_seconds: float | None = None,
        lock=None,
        on_give_up: Callable[[], None] | None = None,
    ) -> None:
        self._lock = lock or make_lock(engine)
        self._on_give_up = on_give_up
        self._start_scheduler = start_scheduler
        self._poll = poll_seconds if poll_seconds is not None else poll_seconds_default()
        self._stop = threading.Event()
        self._scheduler: Any = None  # what start_scheduler returned (APScheduler: untyped)
        self._thread = threading.Thread(target=self._run, name="scheduler-role", daemon=True)
        self.changed = threading.Event()  # set whenever the role is taken or given up

    @property
    def is_leader(self) -> bool:
        return self._scheduler is not None

    def start(self) -> SchedulerRole:
        self._thread.start()
        return self

    def stop(self) -> None:
        """The process is stopping: send nothing more, let the job under way finish (a
        drain records what it sent and gives back what it claimed but did not start), then
        release the lock. Called before the interpreter shuts down (a job submitted after
        that fails with "cannot schedule new futures after interpreter shutdown")."""
        self._stop.set()
        self._thread.join(timeout=self._poll + 5)
        self._give_up(wait=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                held = self._lock.try_acquire()
            except Exception:
                log.exception("could not reach the database for the scheduler lock")
                held = False
            if held and self._scheduler is None:
                try:
                    self._scheduler = self._start_scheduler()
                except Exception:
                    # e.g. the database went away between the lock and the job store: give
                    # the role back (a file lock would otherwise stay held) and try again
                    log.exception("could not start the scheduler; will try again")
                    self._lock.release()
                else:
                    log.info("this process now runs the scheduler")
                    metrics.scheduler_role(True)
                    self.changed.set()
            elif not held and self._scheduler is not None:
                self._give_up()
            self._stop.wait(self._poll)

    def _give_up(self, *, wait: bool = False) -> None:
        if self._scheduler is not None:
            log.info("this process no longer runs the scheduler")
            metrics.scheduler_role(False)
            if self._on_give_up is not None:
                self._on_give_up()
            try:
                self._scheduler.shutdown(wait=wait)
            except Exception:
                log.exception("stopping the scheduler failed")
            self._scheduler = None
            self.changed.set()
        self._lock.release()


@contextmanager
def role_if_free(engine: Engine) -> Iterator[bool]:
    """For a one-off command: hold the scheduler role while it runs, if no process has it.

    Yields whether it is held. Only the holder sends the outbox, so a command that could not
    take the role leaves its messages queued for the process that has it.
    """
    lock = make_lock(engine)
    try:
        held = lock.try_acquire()
    except Exception:
        log.exception("could not reach the database for the scheduler lock")
        held = False
    try:
        yield held
    finally:
        if held:
            lock.release()
