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
