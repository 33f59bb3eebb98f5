"""Alembic driven from code: no alembic.ini at the top level, the URL comes from Settings."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from bot.db import normalise_url

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(database_url: str, connection=None) -> Config:
    """An Alembic Config for ``database_url`` (or an open ``connection``, used by tests)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(database_url).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(database_url: str, connection=None) -> None:
    """Bring the database to the newest schema."""
    command.upgrade(alembic_config(database_url, connection), "head")


def check(database_url: str, connection=None) -> None:
    """Raise if the models and the migrations disagree (``alembic check``)."""
    command.check(alembic_config(database_url, connection))
