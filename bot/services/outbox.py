"""The outbox: fan-out messages stored before they are sent, claimed in batches, settled once.

A message's life: ``pending`` (enqueued, or waiting for its retry time) -> ``sending`` (claimed
by one process, which commits the claim before calling Slack) -> ``sent`` | ``failed`` |
``dropped``. A ``sending`` row whose process died is taken back once its lease has passed (or
at once by the next scheduler, see :func:`recover`); its ``maybe_sent`` flag tells the next
sender to look in Slack for it (by the metadata it was sent with) before sending it again.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import OutboxMessage, OutboxState

LEASE = timedelta(minutes=2)  # a claim older than this belongs to a process presumed dead
MAX_BACKOFF = timedelta(minutes=15)


@dataclass(frozen=True)
class Outgoing:
    """A claimed message, detached from its session: what a sender thread needs."""

    id: int
    kind: str
    subject_id: int | None
    channel: str
    text: str
    blocks: list | None
    look_first: bool  # an earlier try may have reached Slack
    attempts: int


def enqueue(
    session: Session,
    *,
    key: str,
    kind: str,
    channel: str,
    text: str,
    blocks: list | None = None,
    subject_id: int | None = None,
    expires_at: datetime | None = None,
    now: datetime,
) -> bool:
    """Store a message to send; False when ``key`` is already in the outbox (idempotent)."""
    row = OutboxMessage(
        key=key,
        kind=kind,
        subject_id=subject_id,
        channel=channel,
        text=text,
        blocks=blocks,
        state=OutboxState.PENDING,
        not_before=now,
        expires_at=expires_at,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


def exists(session: Session, key: str) -> bool:
    return session.scalar(select(OutboxMessage.id).where(OutboxMessage.key == key)) is not None


def claim(session: Session, *, owner: str, now: datetime, limit: int) -> list[Outgoing]:
    """Take up to ``limit`` messages that are due (or whose claim has lapsed), oldest first.

    The UPDATE re-checks each row's state, so two processes claiming at once never take the
    same row; PostgreSQL skips rows another claim has locked instead of waiting for them.
    """
    due = or_(
        (OutboxMessage.state == OutboxState.PENDING) & (OutboxMessage.not_before <= now),
        (OutboxMessage.state == OutboxState.SENDING) & (OutboxMessage.claimed_at < now - LEASE),
    )
    ids = session.scalars(
        select(OutboxMessage.id)
        .where(due)
        .order_by(OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not ids:
        return []
    batch = f"{owner}:{uuid.uuid4().hex[:8]}"
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), due)  # re-checked: a racing claim took none of them
        .values(
            state=OutboxState.SENDING,
            claimed_by=batch,
            claimed_at=now,
            attempts=OutboxMessage.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    claimed = session.scalars(
        select(OutboxMessage).where(OutboxMessage.claimed_by == batch).order_by(OutboxMessage.id)
    ).all()
    out = []
    for row in claimed:
        out.append(
            Outgoing(
                id=row.id,
                kind=row.kind,
                subject_id=row.subject_id,
                channel=row.channel,
                text=row.text,
                blocks=row.blocks,
                look_first=row.maybe_sent,
                attempts=row.attempts,
            )
        )
        row.maybe_sent = True  # from now until settled, this send may have happened
    return out


def _owned(session: Session, message_id: int) -> OutboxMessage | None:
    row = session.get(OutboxMessage, message_id)
    if row is None or row.state != OutboxState.SENDING:
        return None  # settled meanwhile (e.g. by a process that took over a lapsed claim)
    return row


def mark_sent(
    session: Session, *, message_id: int, channel: str, ts: str, now: datetime
) -> OutboxMessage | None:
    """Settle a message as sent; the row, or None when it was settled already."""
    row = _owned(session, message_id)
    if row is None:
        return None
    row.state, row.sent_at, row.sent_channel, row.sent_ts = OutboxState.SENT, now, channel, ts
    row.maybe_sent, row.last_error = False, None
    return row


def mark_retry(
    session: Session, *, message_id: int, error: str, maybe_sent: bool, now: datetime
) -> None:
    """Back off and try again later (exponential, with jitter, at most MAX_BACKOFF)."""
    row = _owned(session, message_id)
    if row is None:
        return
    backoff = min(MAX_BACKOFF, timedelta(seconds=5 * 2 ** min(row.attempts, 10)))
    row.state = OutboxState.PENDING
    row.not_before = now + backoff * random.uniform(0.8, 1.2)
    row.maybe_sent, row.last_error = maybe_sent, error[:255]


def mark_final(
    session: Session, *, message_id: int, state: str, error: str | None = None
) -> OutboxMessage | None:
    """Settle a message as failed for good, or as no longer wanted."""
    row = _owned(session, message_id)
    if row is None:
        return None
    row.state, row.maybe_sent, row.last_error = state, False, (error or None) and error[:255]
    return row


def expire(session: Session, *, now: datetime) -> int:
    """Messages whose moment has passed (a prompt for a closed week) are dropped unsent."""
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.state == OutboxState.PENDING,
            OutboxMessage.expires_at.is_not(None),
            OutboxMessage.expires_at <= now,
        )
        .values(state=OutboxState.DROPPED, last_error="expired before it could be sent")
    )
    return result.rowcount


def recover(session: Session, *, now: datetime) -> int:
    """Release every claim at once (the caller knows no other process is sending)."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.state == OutboxState.SENDING)
        .values(state=OutboxState.PENDING, not_before=now, maybe_sent=True)
    )
    return result.rowcount


def counts(session: Session) -> dict[str, int]:
    """Messages per state (for the operator and the benchmarks)."""
    rows = session.execute(
        select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
    ).all()
    return {state: n for state, n in rows}


def states_of(session: Session, keys: Sequence[str]) -> dict[str, str]:
    rows = session.execute(
        select(OutboxMessage.key, OutboxMessage.state).where(OutboxMessage.key.in_(keys))
    ).all()
    return {key: state for key, state in rows}
