"""job runs: when a once-a-day job (the CRM reconciliation) is next due

A new table, job_runs: one row per job, by name, with when it is next due and how its last
run went. A process claims a run by moving ``next_at`` on, so several processes, restarts and
``closeloop tick`` from cron run it once a day.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 13:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.models

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("next_at", bot.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", bot.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ok_at", bot.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_runs")),
    )


def downgrade() -> None:
    op.drop_table("job_runs")
