"""Pooled PostgreSQL connections are pinged before use only after PING_AFTER_IDLE seconds
unused (bot.db._ping_when_idle): a connection used moments ago costs no round trip, and one
that died while idle is replaced without an error."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

import bot.db as db_mod
from bot.db import make_engine


@pytest.fixture
def pg_engine(database_url, monkeypatch):
    if not database_url.startswith("postgresql"):
        pytest.skip("the idle ping is for PostgreSQL (SQLite has no server to lose)")
    monkeypatch.setattr(db_mod, "PING_AFTER_IDLE", 0.2)
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    pings: list[int] = []
    real_ping = engine.dialect.do_ping

    def counting_ping(dbapi_conn):
        pings.append(1)
        return real_ping(dbapi_conn)

    monkeypatch.setattr(engine.dialect, "do_ping", counting_ping)
    engine.pings = pings  # type: ignore[attr-defined]
    try:
        yield engine
    finally:
        engine.dispose()


def backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(text("SELECT pg_backend_pid()"))


def kill_backend(database_url: str, pid: int) -> None:
    other = make_engine(database_url)
    try:
        with other.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            conn.commit()
    finally:
        other.dispose()


def test_a_connection_used_moments_ago_is_not_pinged(pg_engine):
    first = backend_pid(pg_engine)  # a new connection: never pinged
    assert backend_pid(pg_engine) == first
    assert backend_pid(pg_engine) == first
    assert pg_engine.pings == []


def test_an_idle_connection_is_pinged_and_replaced_when_it_died(pg_engine, database_url):
    first = backend_pid(pg_engine)
    time.sleep(0.3)  # idle past PING_AFTER_IDLE
    assert backend_pid(pg_engine) == first  # pinged, alive, kept
    assert len(pg_engine.pings) == 1

    kill_backend(database_url, first)  # the database drops it while it sits in the pool
    time.sleep(0.3)
    second = backend_pid(pg_engine)  # no error: the ping found it dead, a new one was opened
    assert second != first
    assert len(pg_engine.pings) == 2
