"""one way out: every post, edit and upload goes through the outbox

The outbox learns edits (chat.update of ``ts``), thread replies (``thread_ts``) and file
uploads (``op``), and how far back to look before resending (``oldest``). The claim and
attempt columns that loop posts, acknowledgements and digests kept for their own retries
go; what they still had to send is carried over into the outbox, so an upgrade loses
nothing that was waiting.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 04:00:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("op", sa.String(length=16), nullable=False, server_default="post")
        )
        batch_op.add_column(sa.Column("thread_ts", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("ts", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("oldest", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("rearm", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    _carry_over_unsent()

    with op.batch_alter_table("loop_posts", schema=None) as batch_op:
        batch_op.drop_column("needs_update")
        batch_op.drop_column("post_attempts")
        batch_op.drop_column("claimed_at")
    with op.batch_alter_table("acknowledgements", schema=None) as batch_op:
        batch_op.drop_column("notify_attempts")
        batch_op.drop_column("notify_claimed_at")
    with op.batch_alter_table("digests", schema=None) as batch_op:
        batch_op.alter_column("claimed_at", new_column_name="created_at")
        batch_op.drop_column("attempts")
        batch_op.drop_column("chart_claimed_at")


def _carry_over_unsent() -> None:
    """Loop posts never posted or waiting for an edit, acknowledgements whose thread reply
    never went out, and digest charts never uploaded become outbox messages (rendered from
    the database when they are sent)."""
    conn = op.get_bind()
    now = datetime.now(UTC)
    outbox = sa.table(
        "outbox",
        sa.column("key", sa.String),
        sa.column("kind", sa.String),
        sa.column("op", sa.String),
        sa.column("subject_id", sa.Integer),
        sa.column("channel", sa.String),
        sa.column("thread_ts", sa.String),
        sa.column("ts", sa.String),
        sa.column("text", sa.Text),
        sa.column("state", sa.String),
        sa.column("not_before", sa.DateTime(timezone=True)),
        sa.column("attempts", sa.Integer),
        sa.column("maybe_sent", sa.Boolean),
        sa.column("oldest", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    rows = []

    def slack_ts(when) -> str | None:
        """A Slack ts a little before ``when`` (how far back to look before resending)."""
        if when is None:
            return None
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return f"{when.timestamp() - 600:.6f}"

    def add(key, kind, op_, subject_id, channel, *, ts=None, maybe_sent=False, since=None):
        rows.append(
            {
                "key": key,
                "kind": kind,
                "op": op_,
                "subject_id": subject_id,
                "channel": channel,
                "thread_ts": None,
                "ts": ts,
                "text": "",
                "state": "pending",
                "not_before": now,
                "attempts": 0,
                "maybe_sent": maybe_sent,
                "oldest": slack_ts(since),
                "created_at": now,
            }
        )

    for post_id, channel, ts, _needs_update, attempts, created in conn.execute(
        sa.text(
            "SELECT id, channel, ts, needs_update, post_attempts, created_at FROM loop_posts "
            "WHERE ts IS NULL OR needs_update"
        )
    ):
        if ts is None:
            add(
                f"post:{post_id}",
                "loop_post",
                "post",
                post_id,
                channel,
                maybe_sent=attempts > 0,
                since=created,
            )
        else:
            add(f"post-edit:{post_id}", "loop_post_edit", "update", post_id, channel, ts=ts)
    for ack_id, channel, attempts, created, replied, rep_told, rep in conn.execute(
        sa.text(
            "SELECT a.id, p.channel, a.notify_attempts, a.created_at, a.thread_ts, "
            "a.rep_notified_at, p.author_user_id FROM acknowledgements a "
            "JOIN loop_posts p ON p.id = a.post_id "
            "WHERE a.thread_ts IS NULL OR a.rep_notified_at IS NULL"
        )
    ):
        if replied is None:
            add(
                f"ack-reply:{ack_id}",
                "ack_reply",
                "post",
                ack_id,
                channel,
                maybe_sent=attempts > 0,
                since=created,
            )
        if rep_told is None:
            add(f"ack-dm:{ack_id}", "ack_dm", "post", ack_id, rep, since=created)
    for digest_id, channel, month in conn.execute(
        sa.text(
            "SELECT id, channel, month FROM digests WHERE ts IS NOT NULL AND chart_file_id IS NULL"
        )
    ):
        add(f"digest-chart:{str(month)[:7]}", "digest_chart", "upload", digest_id, channel)
    # A digest never posted is queued again, whole, by the next tick (it renders its figures
    # then); its row would otherwise say the month is taken.
    conn.execute(sa.text("DELETE FROM digests WHERE ts IS NULL"))
    # Messages already in the outbox and not settled look back from when they were queued.
    for row_id, created in conn.execute(
        sa.text(
            "SELECT id, created_at FROM outbox WHERE oldest IS NULL "
            "AND state IN ('pending', 'sending')"
        )
    ):
        conn.execute(
            sa.text("UPDATE outbox SET oldest = :oldest WHERE id = :id"),
            {"oldest": slack_ts(created), "id": row_id},
        )
    existing = {key for (key,) in conn.execute(sa.text("SELECT key FROM outbox"))}
    rows = [row for row in rows if row["key"] not in existing]
    if rows:
        op.bulk_insert(outbox, rows)


def downgrade() -> None:
    with op.batch_alter_table("digests", schema=None) as batch_op:
        batch_op.alter_column("created_at", new_column_name="claimed_at")
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("chart_claimed_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("acknowledgements", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("notify_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("notify_claimed_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("loop_posts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("needs_update", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("post_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("rearm")
        batch_op.drop_column("oldest")
        batch_op.drop_column("ts")
        batch_op.drop_column("thread_ts")
        batch_op.drop_column("op")
