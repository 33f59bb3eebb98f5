from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from bot import migrate
from bot.models import Base


def test_models_and_migrations_do_not_drift(database_url):
    """`alembic check`: the migrated schema equals the models (fails on any drift)."""
    migrate.check(database_url)


def test_every_model_table_is_created_by_migrations(engine):
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_upgrading_to_the_outbox_for_everything_carries_over_what_was_waiting(
    tmp_path, database_url
):
    """0004: a post never posted, an acknowledgement whose reply and rep DM never went out,
    an edit waiting, become outbox messages; a digest never posted is given back to the
    tick; nothing already done is queued again."""
    import os

    from alembic import command
    from sqlalchemy import create_engine, text

    from bot.db import normalise_url
    from tests.conftest import postgres_database

    def scenario(url: str) -> None:
        command.upgrade(migrate.alembic_config(url), "0003")
        engine = create_engine(normalise_url(url))
        now = "2026-11-20 15:00:00+00:00"
        with engine.begin() as conn:
            for post_id, ts, needs_update in (
                (1, None, False),
                (2, "1.2", True),
                (3, "1.3", False),
            ):
                conn.execute(
                    text(
                        "INSERT INTO loop_posts (id, kind, subject_id, author_user_id, channel,"
                        " ts, needs_update, post_attempts, created_at) VALUES (:id, 'feedback',"
                        " :id, 'UANA', 'CMKTG', :ts, :nu, 1, :now)"
                    ),
                    {"id": post_id, "ts": ts, "nu": needs_update, "now": now},
                )
            for ack_id, thread_ts, told in ((1, None, None), (2, "1.9", None), (3, "1.8", now)):
                conn.execute(
                    text(
                        "INSERT INTO acknowledgements (id, post_id, user_id, via, created_at,"
                        " thread_ts, rep_notified_at, notify_attempts) VALUES (:id, 3, 'UMIA',"
                        " 'note', :now, :thread, :told, 0)"
                    ),
                    {"id": ack_id, "now": now, "thread": thread_ts, "told": told},
                )
            for month, ts in (("2026-09-01", "1.5"), ("2026-10-01", None)):
                conn.execute(
                    text(
                        "INSERT INTO digests (month, claimed_at, attempts, channel, ts)"
                        " VALUES (:month, :now, 1, 'CDIGEST', :ts)"
                    ),
                    {"month": month, "now": now, "ts": ts},
                )
        migrate.upgrade(url)
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT key, kind FROM outbox")).all())
            months = [str(m)[:7] for (m,) in conn.execute(text("SELECT month FROM digests"))]
            oldest = conn.execute(text("SELECT oldest FROM outbox WHERE key = 'post:1'")).scalar()
        engine.dispose()
        assert rows == {
            "post:1": "loop_post",
            "post-edit:2": "loop_post_edit",
            "ack-reply:1": "ack_reply",
            "ack-dm:1": "ack_dm",
            "ack-dm:2": "ack_dm",
            "digest-chart:2026-09": "digest_chart",
        }
        assert months == ["2026-09"]
        assert float(oldest) == 1_795_186_800 - 600  # ten minutes before the post was made

    if database_url.startswith("sqlite"):
        scenario(f"sqlite:///{tmp_path / 'upgrade.db'}")
    else:
        with postgres_database(os.environ["TEST_DATABASE_URL"]) as url:
            scenario(url)


def _scenario_database(tmp_path, database_url, scenario) -> None:
    """Run ``scenario(url)`` on an empty database of the suite's backend."""
    import os

    from tests.conftest import postgres_database

    if database_url.startswith("sqlite"):
        scenario(f"sqlite:///{tmp_path / 'fresh.db'}")
    else:
        with postgres_database(os.environ["TEST_DATABASE_URL"]) as url:
            scenario(url)


def test_a_fresh_database_records_no_start_until_the_first_tick_and_migrates_twice(
    tmp_path, database_url, fake_slack
):
    """0005 on a new database: the installation table is empty (the first tick records the
    start, not ``closeloop migrate``, which may run days before the bot first does); running
    ``closeloop migrate`` again changes nothing."""
    import os

    from sqlalchemy import create_engine, text

    from bot.db import normalise_url
    from tests.conftest import BOT_TOKEN, closeloop

    def scenario(url: str) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CLOSELOOP_ENV_FILE": str(tmp_path / "absent.env"),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_APP_TOKEN": "xapp-test",
            "SLACK_API_URL": fake_slack.url,
            "DATABASE_URL": url,
            "FEEDBACK_CHANNEL": "CMKTG",
            "SALES_USERGROUP": "SSALES",
            "MARKETING_USERS": "UMIA",
        }
        for _ in range(2):
            out = closeloop(env, "migrate")
            assert out.returncode == 0, out.stderr
        engine = create_engine(normalise_url(url))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM installation")).scalar() == 0
            head = ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head()
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        engine.dispose()
        assert fake_slack.calls == []

    _scenario_database(tmp_path, database_url, scenario)


def test_upgrading_an_installation_with_history_starts_it_at_its_earliest_activity(
    tmp_path, database_url
):
    """0005 on a database that has been in use: the start is the earliest instant any row
    records, so the upgraded bot holds back nothing it would have sent before; a second
    upgrade keeps it."""
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import create_engine, text

    from bot.db import normalise_url

    def scenario(url: str) -> None:
        command.upgrade(migrate.alembic_config(url), "0004")
        engine = create_engine(normalise_url(url))
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO members (user_id, is_sales, first_seen_at, updated_at)"
                    " VALUES ('UANA', :t, '2026-10-02 08:00:00+00:00', '2026-11-01 08:00:00+00:00')"
                ),
                {"t": True},
            )
            conn.execute(
                text(
                    "INSERT INTO prompts (user_id, week_start, tz, status, claimed_at,"
                    " remind_at, closes_at, send_attempts)"
                    " VALUES ('UANA', '2026-09-28', 'UTC', 'answered', '2026-10-02 16:00:00+00:00',"
                    " '2026-10-05 10:00:00+00:00', '2026-10-09 16:00:00+00:00', 0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO digests (month, created_at, channel)"
                    " VALUES ('2026-10-01', '2026-11-02 09:00:00+00:00', 'CDIGEST')"
                )
            )
        migrate.upgrade(url)
        migrate.upgrade(url)
        with engine.connect() as conn:
            (started,) = conn.execute(text("SELECT started_at FROM installation")).one()
        engine.dispose()
        if isinstance(started, str):
            started = datetime.fromisoformat(started)
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        assert started == datetime(2026, 10, 2, 8, 0, tzinfo=UTC)

    _scenario_database(tmp_path, database_url, scenario)
