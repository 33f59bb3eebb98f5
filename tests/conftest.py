"""Fixtures: databases (SQLite always, PostgreSQL when TEST_DATABASE_URL is set), a clock,
the fake Slack, and a harness that drives the running app with signed requests."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.orm import Session

from bot import migrate
from bot.config import Settings
from bot.db import make_engine, make_session_factory, normalise_url
from bot.models import Base

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


class FakeClock:
    """A controllable clock; ``rt.clock`` is this object."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def __call__(self) -> datetime:
        return self.current

    def set(self, now: datetime) -> None:
        self.current = now

    def advance(self, **kwargs) -> None:
        self.current += timedelta(**kwargs)


@contextmanager
def postgres_database(base_url: str, *, prefix: str = "closeloop_test") -> Iterator[str]:
    """A throwaway database beside ``base_url``'s, dropped afterwards (tests and bench/)."""
    admin = create_engine(normalise_url(base_url), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request, tmp_path_factory) -> Iterator[str]:
    """A migrated (``alembic upgrade head``) database URL, one per backend per session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'closeloop.db'}"
        migrate.upgrade(url)
        yield url
    else:
        with postgres_database(os.environ["TEST_DATABASE_URL"]) as url:
            migrate.upgrade(url)
            yield url


@pytest.fixture(scope="session")
def engine(database_url) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def _wipe(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        if "apscheduler_jobs" in tables:
            conn.execute(text("DELETE FROM apscheduler_jobs"))


@pytest.fixture
def db(engine) -> Iterator[Session]:
    """A session inside an outer transaction that is rolled back after the test."""
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def session_factory(engine):
    """Real commits for tests that run the app across threads; tables emptied afterwards."""
    _wipe(engine)
    yield make_session_factory(engine)
    _wipe(engine)


@pytest.fixture
def clock() -> FakeClock:
    # A Wednesday, so no prompt is due until the test moves the clock.
    return FakeClock(datetime(2026, 11, 18, 12, 0, tzinfo=UTC))


SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"


def make_settings(slack_url: str, database_url: str, **overrides: str) -> Settings:
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack_url,
        "DATABASE_URL": database_url,
        "FEEDBACK_CHANNEL": "CMKTG",
        "SALES_USERGROUP": "SSALES",
        "MARKETING_USERGROUP": "SMKTG",
        "DIGEST_CHANNEL": "CDIGEST",
        # One message in flight at a time: messages go out in the order they were queued,
        # so a fault a test injects meets the message it means (fan-out tests set more).
        "OUTBOX_WORKERS": "1",
    }
    env.update(overrides)
    return Settings.from_env({k: v for k, v in env.items() if v is not None})


# The harness's installation has been running since long before any test's clock, as a
# real one has by the time its schedule is under test; tests of a first start delete it.
INSTALLED_AT = datetime(2020, 1, 1, tzinfo=UTC)


def installed_long_ago(session_factory) -> None:
    from bot.models import Installation

    with session_factory.begin() as session:
        session.add(Installation(id=1, started_at=INSTALLED_AT))


@pytest.fixture
def fake_slack():
    from tests.fakeslack import FakeSlack, manifest_scopes

    slack = FakeSlack(bot_token=BOT_TOKEN)
    slack.start()
    try:
        yield slack
    finally:
        slack.stop()
    if slack.granted == manifest_scopes():  # the app as manifest.yml installs it
        refused = {c.method for c in slack.calls if c.error == "missing_scope"}
        assert not refused, f"refused for a scope manifest.yml lacks: {sorted(refused)}"


@pytest.fixture
def settings_overrides() -> dict[str, str]:
    """Extra settings for the harness; a test module overrides this fixture."""
    return {}


@pytest.fixture
def harness(fake_slack, session_factory, database_url, clock, settings_overrides):
    """The running app over HTTP, with two reps in different time zones and one marketer."""
    from tests.harness import Harness

    fake_slack.add_user("UANA", tz="Europe/Berlin", name="ana", email="ana@example.com")
    fake_slack.add_user("UBEN", tz="America/Los_Angeles", name="ben", email="ben@example.com")
    fake_slack.add_user("UMIA", tz="America/New_York", name="mia", email="mia@example.com")
    fake_slack.add_user("UOUT", tz="UTC", name="outsider")
    fake_slack.add_user("UMGR", tz="Europe/London", name="manager")
    fake_slack.set_usergroup("SSALES", ["UANA", "UBEN"])
    fake_slack.set_usergroup("SMKTG", ["UMIA"])
    fake_slack.add_channel("CMKTG", name="marketing-feedback")
    fake_slack.add_channel("CWINLOSS", name="win-loss")
    fake_slack.add_channel("CMGR", name="sales-managers")
    fake_slack.add_channel("CDIGEST", name="monthly-digest")
    settings = make_settings(fake_slack.url, database_url, **settings_overrides)
    installed_long_ago(session_factory)
    h = Harness(settings=settings, slack=fake_slack, session_factory=session_factory, clock=clock)
    h.start()
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def cli_env(fake_slack, tmp_path, database_url, session_factory):
    """The environment an operator would set; the database is the suite's (SQLite, and
    PostgreSQL too when TEST_DATABASE_URL is set), emptied around each test."""
    fake_slack.add_user("UANA", tz="Europe/Berlin", name="ana", email="ana@example.com")
    fake_slack.add_user("UBEN", tz="America/Los_Angeles", name="ben", email="ben@example.com")
    fake_slack.add_user("UMIA", tz="America/New_York", name="mia", email="mia@example.com")
    fake_slack.set_usergroup("SSALES", ["UANA", "UBEN"])
    fake_slack.add_channel("CMKTG", name="marketing-feedback")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CLOSELOOP_ENV_FILE": str(tmp_path / "absent.env"),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake_slack.url.rstrip("/"),  # without the trailing slash on purpose
        "DATABASE_URL": database_url,
        "FEEDBACK_CHANNEL": "CMKTG",
        "SALES_USERGROUP": "SSALES",
        "MARKETING_USERS": "UMIA",
    }
    return env


def closeloop(env, *args, timeout=60, input=None):  # noqa: A002 - subprocess's name
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
