"""installation start: the schedule never reaches back before the installation began

A new table with one row, when the installation began. A fresh database gets no row here: the
scheduler's first tick records it (bot.services.installation), because ``migrate`` can run
days before the bot is first started. A database that already holds activity is an
installation that has been running: it is given the earliest instant its rows record (the
first member seen, prompt claimed, post, acknowledgement, event, deal, entry, digest or
message queued), so the upgrade holds back nothing the old code would have sent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 07:00:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column): every instant at which the bot (or an import) recorded something.
ACTIVITY = (
    ("members", "first_seen_at"),
    ("prompts", "claimed_at"),
    ("feedback_answers", "created_at"),
    ("loop_posts", "created_at"),
    ("acknowledgements", "created_at"),
    ("inbound_events", "received_at"),
    ("competitors", "created_at"),
    ("deals", "received_at"),
    ("winloss_entries", "logged_at"),
    ("digests", "created_at"),
    ("outbox", "created_at"),
)


def upgrade() -> None:
    installation = op.create_table(
        "installation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installation")),
    )
    earliest = _earliest_activity()
    if earliest is not None:
        op.bulk_insert(installation, [{"id": 1, "started_at": earliest}])


def downgrade() -> None:
    op.drop_table("installation")


def _earliest_activity() -> datetime | None:
    conn = op.get_bind()
    found: list[datetime] = []
    for table, column in ACTIVITY:
        col = sa.column(column, sa.DateTime(timezone=True))
        value = conn.execute(sa.select(sa.func.min(col)).select_from(sa.table(table))).scalar()
        if value is None:
            continue
        if isinstance(value, str):  # SQLite hands back text when a function wraps it
            value = datetime.fromisoformat(value)
        found.append(value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC))
    return min(found, default=None)
