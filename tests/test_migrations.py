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
