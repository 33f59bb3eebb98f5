"""A locked or silent database never holds Slack past its 3 seconds, and /healthz says so
within 2 (bot.db's timeouts, bot.health).

* locked: another connection holds SQLite's write lock (``BEGIN IMMEDIATE``), or another
  PostgreSQL session holds ``LOCK TABLE ... IN ACCESS EXCLUSIVE MODE`` in an open transaction;
* silent: DATABASE_URL names a server on 127.0.0.1 that accepts connections and never says a
  word (before, a request waited on it for ever, and so did every thread after it).

A win/loss entry submitted meanwhile keeps its modal open, with what the rep typed, and says it
was not saved; once the database answers again the same submission is stored, once.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time

import pytest
from sqlalchemy import func, make_url, select, text

from bot.db import make_engine, make_session_factory, normalise_url, patient
from bot.models import WinLossEntry
from tests.harness import Harness
from tests.test_winloss_scenario import QUOTE, fill, submit_winloss


class Blackhole:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read from nor written to

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


class WriteLock:
    """Another connection holding what a write needs, until ``release()``."""

    def __init__(self, database_url: str) -> None:
        url = make_url(normalise_url(database_url))
        self.backend = url.get_backend_name()
        if self.backend == "sqlite":
            self.raw = sqlite3.connect(url.database, isolation_level=None)
            self.raw.execute("BEGIN IMMEDIATE")
        else:
            self.engine = make_engine(database_url)
            self.conn = self.engine.connect()
            self.conn.execute(text("SET statement_timeout = 0"))
            self.conn.execute(
                text("LOCK TABLE winloss_entries, inbound_events IN ACCESS EXCLUSIVE MODE")
            )

    def release(self) -> None:
        if self.backend == "sqlite":
            self.raw.rollback()
            self.raw.close()
        else:
            self.conn.rollback()
            self.conn.close()
            self.engine.dispose()


def _winloss_modal(h: Harness):
    h.command("UANA", "", command="/winloss")
    modal = h.slack.calls_to("views.open")[-1].params["view"]
    typed = fill(
        modal,
        deal_name="Initech expansion",
        outcome="lost",
        reason=QUOTE,
        reason_category="Price",
        insight="Lead with the consolidation story",
    )
    return modal, typed


def _timed(fn):
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


def _entries(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(WinLossEntry))


def _assert_kept_open(reply) -> None:
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["response_action"] == "errors"
    assert "not saved" in body["errors"]["reason"]
    assert "still here" in body["errors"]["reason"]


def test_a_locked_database_answers_the_form_and_healthz_in_time(harness, engine, database_url):
    h = harness
    modal, typed = _winloss_modal(h)
    assert h.request("/healthz", method="GET", signed=False).status == 200

    lock = WriteLock(database_url)
    try:
        reply, took = _timed(lambda: submit_winloss(h, "UANA", modal, typed))
        assert took < 3
        _assert_kept_open(reply)
        health, took = _timed(lambda: h.request("/healthz", method="GET", signed=False))
        assert health.status == 503 and took < 2
        # An event cannot be stored: answered in time, with a 500 (Slack delivers it again).
        reply, took = _timed(lambda: h.dm("UANA", "- ROI opener", event_id="EvLOCKED"))
        assert reply.status == 500 and took < 3
    finally:
        lock.release()
    assert _entries(engine) == 0

    assert h.request("/healthz", method="GET", signed=False).status == 200
    reply = submit_winloss(h, "UANA", modal, typed)  # the text the modal kept
    assert (reply.status, reply.body) == (200, "")
    assert _entries(engine) == 1


@pytest.fixture
def blackhole():
    hole = Blackhole()
    try:
        yield hole
    finally:
        hole.close()


def test_a_silent_database_answers_the_form_and_healthz_in_time(harness, blackhole, engine):
    modal, typed = _winloss_modal(harness)  # opened while the database still answered
    silent_url = f"postgresql://closeloop@127.0.0.1:{blackhole.port}/closeloop"
    silent_engine = make_engine(silent_url)
    silent = Harness(
        settings=harness.settings,
        slack=harness.slack,
        session_factory=make_session_factory(silent_engine),
        clock=harness.clock,
    )
    silent.start()
    try:
        reply, took = _timed(lambda: submit_winloss(silent, "UANA", modal, typed))
        assert took < 3
        _assert_kept_open(reply)
        health, took = _timed(lambda: silent.request("/healthz", method="GET", signed=False))
        assert health.status == 503 and took < 2
        reply, took = _timed(lambda: silent.dm("UANA", "- ROI opener", event_id="EvSILENT"))
        assert reply.status == 500 and took < 3
        # A second check while the first still waits for the silent server shares it.
        health = silent.request("/healthz", method="GET", signed=False)
        assert health.status == 503
        # Nothing waits for ever: the connect timeout ends the check's own thread too.
        deadline = time.monotonic() + 5
        while any(t.name == "health-check" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the health check still waits"
            time.sleep(0.05)
        assert blackhole.accepted  # it really was asked
    finally:
        silent.stop()
        silent_engine.dispose()
    assert _entries(engine) == 0
    # The same modal, submitted to the bot whose database answers, is stored.
    reply = submit_winloss(harness, "UANA", modal, typed)
    assert (reply.status, reply.body) == (200, "")
    assert _entries(engine) == 1


def _limits(factory) -> tuple:
    with factory() as session:
        if session.bind.dialect.name == "sqlite":
            return (session.execute(text("PRAGMA busy_timeout")).scalar(),)
        return (
            session.execute(text("SHOW statement_timeout")).scalar(),
            session.execute(text("SHOW lock_timeout")).scalar(),
        )


def test_work_nobody_waits_on_gets_longer_limits_than_a_request(database_url):
    """Requests: the short limits above. The scheduler's jobs (bot.db.patient): longer ones,
    for their transactions only; the connection they used serves a request with the short
    ones again."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    factory = make_session_factory(engine)
    try:
        sqlite = engine.dialect.name == "sqlite"
        request = (1500,) if sqlite else ("2s", "1500ms")
        assert _limits(factory) == request
        with patient():
            assert _limits(factory) == ((30000,) if sqlite else ("2min", "30s"))
        assert _limits(factory) == request
    finally:
        engine.dispose()
