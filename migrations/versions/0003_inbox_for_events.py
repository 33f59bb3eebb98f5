"""inbox for events: each Events API delivery stored with its payload and a state

Replaces processed_events (event_ids recorded before processing: at most once) with
inbound_events (stored, claimed, marked done after processing: at least once, deduplicated).
The event_ids already recorded are carried over as done, so their retries stay ignored.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 19:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_events",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("due_at", bot.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("received_at", bot.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", bot.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_inbound_events")),
    )
    with op.batch_alter_table("inbound_events", schema=None) as batch_op:
        batch_op.create_index("ix_inbound_events_state_due_at", ["state", "due_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_inbound_events_received_at"), ["received_at"], unique=False
        )

    op.execute(
        "INSERT INTO inbound_events (event_id, state, attempts, received_at, finished_at) "
        "SELECT event_id, 'done', 1, received_at, received_at FROM processed_events"
    )
    op.drop_table("processed_events")


def downgrade() -> None:
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", bot.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_events")),
    )
    # Every stored event counts as processed again (at most once, as before this revision).
    op.execute(
        "INSERT INTO processed_events (event_id, received_at) "
        "SELECT event_id, received_at FROM inbound_events"
    )
    with op.batch_alter_table("inbound_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_events_received_at"))
        batch_op.drop_index("ix_inbound_events_state_due_at")

    op.drop_table("inbound_events")
