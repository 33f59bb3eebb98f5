"""CRM deliveries: every delivery from a CRM stored raw before it is processed

A new table, crm_deliveries: one row per delivery (an event) from a CRM (HubSpot first),
unique by its source and the CRM's own event id, with the body as received, the headers that
matter, and its processing state. And deals.crm_reason: the CRM's lost/won reason, shown to the
rep beside the reason field (the customer's words stay the rep's to write).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crm_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=False),
        sa.Column("received_at", bot.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("due_at", bot.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", bot.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("note", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_deliveries")),
        sa.UniqueConstraint(
            "source", "delivery_id", name=op.f("uq_crm_deliveries_source_delivery_id")
        ),
    )
    with op.batch_alter_table("crm_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_crm_deliveries_state_due_at", ["state", "due_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_crm_deliveries_received_at"), ["received_at"], unique=False
        )
    with op.batch_alter_table("deals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("crm_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deals", schema=None) as batch_op:
        batch_op.drop_column("crm_reason")
    with op.batch_alter_table("crm_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crm_deliveries_received_at"))
        batch_op.drop_index("ix_crm_deliveries_state_due_at")
    op.drop_table("crm_deliveries")
