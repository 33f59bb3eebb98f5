"""Processes started at once on a fresh database all come up: migrations take a lock
(bot.migrate), so the second, third and fourth find the schema at head instead of creating
the same types and tables at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from bot import migrate
from bot.db import normalise_url
from bot.models import Base
from tests.conftest import BOT_TOKEN, postgres_database


def _fresh_database(tmp_path, database_url):
    if database_url.startswith("sqlite"):
        from contextlib import nullcontext

        return nullcontext(f"sqlite:///{tmp_path / 'fresh.db'}")
    return postgres_database(os.environ["TEST_DATABASE_URL"], prefix="closeloop_h5_migrate")


def _at_head(url: str) -> None:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
            head = ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head()
            assert list(versions) == [head]
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    migrate.check(url)


def test_four_closeloop_migrate_at_once_on_a_fresh_database_all_succeed(
    tmp_path, database_url, fake_slack
):
    with _fresh_database(tmp_path, database_url) as url:
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
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bot", "migrate"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        for code, out, err in results:
            assert code == 0, err
            assert "up to date" in out
        _at_head(url)


def test_four_upgrades_at_once_in_one_process_all_succeed(tmp_path, database_url):
    with _fresh_database(tmp_path, database_url) as url:
        with ThreadPoolExecutor(4) as pool:
            for done in [pool.submit(migrate.upgrade, url) for _ in range(4)]:
                done.result(timeout=120)
        _at_head(url)
