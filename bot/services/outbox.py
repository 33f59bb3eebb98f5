"""The outbox: every message for Slack stored before it is sent, claimed, settled once.

A message's life: ``pending`` (enqueued, or waiting for its retry time) -> ``sending``
(claimed: ``claimed_by`` holds the claim's own token, committed before Slack is called) ->
``sent`` | ``failed`` | ``dropped``. Every UPDATE that records a result names the token
(:func:`settle`), so a sender whose claim lapsed and was taken over records nothing. A claim
lapses after its ``lease`` (OUTBOX_LEASE_SECONDS); the sender never starts a Slack call later
than a third of it after its claim (:func:`send_within`), so a live sender is done before
anyone else may take its message, even one whose process lost the scheduler role without
knowing it yet. A lapsed claim is taken as any due message is, with ``maybe_sent`` set: the
next sender first looks for it in Slack.

Plain functions on a Session; the caller commits (bot.delivery.outbox drives them).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import CursorResult, case, event, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from bot.models import Op, OutboxKind, OutboxMessage, OutboxState

LEASE = timedelta(seconds=90)  # the default claim (OUTBOX_LEASE_SECONDS)
# Kinds sent to many people at once (the Friday prompt): claimed after everything else, so a
# reply or a post somebody is waiting for never queues behind a whole team's DMs.
FAN_OUT = (OutboxKind.PROMPT, OutboxKind.REMINDER, OutboxKind.DEAL_REMINDER)
MAX_BACKOFF = timedelta(minutes=15)
# How far before the first attempt "look before resending" reads (clocks differ a little).
CLOCK_SKEW = 120.0


@dataclass(frozen=True)
class FileUpload:
    """What an UPLOAD sends, rendered when it is sent."""

    content: bytes
    filename: str
    title: str
    alt_text: str


@dataclass(frozen=True)
class Outgoing:
    """A claimed message, detached from its session: what a sender thread needs."""

    id: int
    key: str
    kind: str
    op: Op
    subject_id: int | None
    channel: str
    text: str
    blocks: list | None
    thread_ts: str | None
    ts: str | None
    oldest: str | None  # look back this far (a Slack ts) before resending
    look_first: bool  # an earlier try may have reached Slack
    attempts: int  # this claim's attempt (1 for the first)
    token: str  # the claim; a result is recorded only while it is still this one's
    file: FileUpload | None = None  # an UPLOAD's file, rendered at claim time


def enqueue(
    session: Session,
    *,
    key: str,
    kind: str,
    channel: str,
    text: str = "",
    blocks: list | None = None,
    op: Op = Op.POST,
    thread_ts: str | None = None,
    ts: str | None = None,
    subject_id: int | None = None,
    expires_at: datetime | None = None,
    now: datetime,
    again: bool = False,
) -> bool:
    """Store a message to send; False when ``key`` is in the outbox already (idempotent).

    ``again``: for an edit, which renders the subject as it is when it is sent: a message
    already settled (or being sent, with what may now be an older version) is made pending
    once more, so the latest change always reaches Slack. A sender still holding the old
    claim can no longer record anything for it."""
    values = {
        "key": key,
        "kind": kind,
        "op": op,
        "subject_id": subject_id,
        "channel": channel,
        "thread_ts": thread_ts,
        "ts": ts,
        "text": text,
        "blocks": blocks,
        "state": OutboxState.PENDING,
        "not_before": now,
        "expires_at": expires_at,
        "attempts": 0,
        "maybe_sent": False,
        "rearm": False,
        "created_at": now,
    }
    session.info.setdefault(QUEUED, []).append(key)
    # One statement either way (INSERT ... ON CONFLICT, which SQLite and PostgreSQL share):
    # a form's ack waits for it, and a failed INSERT inside a savepoint costs a round trip
    # and an exception.
    insert = _insert_for(session)(OutboxMessage).values(**values)
    if again:
        # A settled one (or one never sent) is made pending again; one being sent right now,
        # maybe with the older version, is marked to go once more after it (mark_sent).
        session.execute(
            insert.on_conflict_do_update(
                index_elements=[OutboxMessage.key],
                set_={
                    "state": OutboxState.PENDING,
                    "not_before": now,
                    "expires_at": expires_at,
                    "attempts": 0,
                    "claimed_by": None,
                    "claimed_at": None,
                    "text": text,
                    "blocks": blocks,
                    "channel": channel,
                    "ts": ts,
                    "last_error": None,
                    "rearm": False,
                },
                where=OutboxMessage.state.not_in((OutboxState.PENDING, OutboxState.SENDING)),
            )
        )
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.key == key, OutboxMessage.state == OutboxState.SENDING)
            .values(rearm=True)
            .execution_options(synchronize_session=False)
        )
        return True
    inserted = session.execute(
        insert.on_conflict_do_nothing(index_elements=[OutboxMessage.key]).returning(
            OutboxMessage.id
        )
    )
    return inserted.first() is not None


def _insert_for(session: Session):
    """The dialect's INSERT, with ON CONFLICT."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


QUEUED = "closeloop_outbox_queued"  # in Session.info: the keys queued in this transaction
# This thread's keys whose transaction committed, the newest few: what one request causes is
# a handful of messages; a fan-out is sent by the scheduler role, not by the thread that
# queued it, and what falls out of this window is sent by that role too.
_committed = threading.local()
REMEMBERED = 20


def track_commits(factory: sessionmaker[Session]) -> None:
    """Remember, per thread, the keys of the messages each committed transaction queued
    (:func:`committed_keys`), so the process can send what a request caused right away."""
    if not event.contains(factory, "after_commit", _remember):
        event.listen(factory, "after_commit", _remember)
        event.listen(factory, "after_rollback", _forget)


def _remember(session: Session) -> None:
    keys = session.info.pop(QUEUED, None)
    if keys:
        pending = getattr(_committed, "keys", None)
        if pending is None:
            pending = _committed.keys = deque(maxlen=REMEMBERED)
        pending.extend(keys)


def _forget(session: Session) -> None:
    session.info.pop(QUEUED, None)


def committed_keys() -> list[str]:
    """The keys this thread's committed transactions queued since the last call (the
    newest REMEMBERED of them)."""
    keys = getattr(_committed, "keys", None)
    if not keys:
        return []
    _committed.keys = deque(maxlen=REMEMBERED)
    return list(dict.fromkeys(keys))


def exists(session: Session, key: str) -> bool:
    return session.scalar(select(OutboxMessage.id).where(OutboxMessage.key == key)) is not None


def send_within(lease: timedelta) -> timedelta:
    """How long after its claim a sender may still start a Slack call: a third of the lease,
    so the call ends before the lease does (with the default 90 s: a post is never retried
    inside the client and times out after 10 s; an edit with its connection retries takes
    30 s at most). A lease shorter than about 60 s is for tests."""
    return lease / 3


def _due(now: datetime, lease: timedelta):
    return or_(
        (OutboxMessage.state == OutboxState.PENDING) & (OutboxMessage.not_before <= now),
        (OutboxMessage.state == OutboxState.SENDING) & (OutboxMessage.claimed_at < now - lease),
    )


def claim(
    session: Session,
    *,
    owner: str,
    now: datetime,
    limit: int,
    lease: timedelta = LEASE,
    keys: Sequence[str] | None = None,
) -> list[Outgoing]:
    """Take up to ``limit`` messages that are due (or whose claim has lapsed), oldest first;
    only those with these ``keys`` when given.

    The UPDATE re-checks each row's state, so two processes claiming at once never take the
    same row; PostgreSQL skips rows another claim has locked instead of waiting for them.
    """
    query = select(OutboxMessage.id, OutboxMessage.maybe_sent).where(_due(now, lease))
    if keys is not None:
        query = query.where(OutboxMessage.key.in_(keys))
    # What people are waiting for first, a fan-out's DMs after it, each oldest first (two
    # reads rather than one sorted on the kind, which would sort a whole fan-out each time).
    found: dict[int, bool] = {}
    for part in (OutboxMessage.kind.not_in(FAN_OUT), OutboxMessage.kind.in_(FAN_OUT)):
        if len(found) >= limit:
            break
        found.update(
            session.execute(
                query.where(part)
                .order_by(OutboxMessage.id)
                .limit(limit - len(found))
                .with_for_update(skip_locked=True)
            ).all()
        )
    if not found:
        return []
    token = f"{owner}:{uuid.uuid4().hex[:12]}"[-64:]
    m = OutboxMessage
    rows = session.execute(
        update(m)
        .where(m.id.in_(found), _due(now, lease))  # re-checked: a racing claim took none
        .values(
            state=OutboxState.SENDING,
            claimed_by=token,
            claimed_at=now,
            attempts=m.attempts + 1,
            oldest=func.coalesce(m.oldest, f"{time.time() - CLOCK_SKEW:.6f}"),
            # From now until settled, each may reach Slack: a sender that takes one over
            # after this claim lapsed looks for it first.
            maybe_sent=True,
        )
        .returning(
            m.id,
            m.key,
            m.kind,
            m.op,
            m.subject_id,
            m.channel,
            m.text,
            m.blocks,
            m.thread_ts,
            m.ts,
            m.oldest,
            m.attempts,
        )
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(
        (
            Outgoing(
                id=row.id,
                key=row.key,
                kind=row.kind,
                op=Op(row.op),
                subject_id=row.subject_id,
                channel=row.channel,
                text=row.text,
                blocks=row.blocks,
                thread_ts=row.thread_ts,
                ts=row.ts,
                oldest=row.oldest,
                look_first=found[row.id],  # what it was before this claim
                attempts=row.attempts,
                token=token,
            )
            for row in rows
        ),
        key=lambda message: message.id,
    )


def settle(session: Session, message: Outgoing, **values) -> bool:
    """Write ``values`` on ``message``'s row if this claim still holds it (the fence); False
    when the claim lapsed and someone else took the message over, or it was settled."""
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message.id,
            OutboxMessage.state == OutboxState.SENDING,
            OutboxMessage.claimed_by == message.token,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult, result).rowcount == 1


def mark_sent(session: Session, message: Outgoing, *, channel: str, ts: str, now: datetime) -> bool:
    """Settle a message as sent (False: this claim no longer holds it; nothing written). One
    marked to go again (a newer edit arrived meanwhile) is pending again instead."""
    again = OutboxMessage.rearm.is_(True)
    return settle(
        session,
        message,
        state=case((again, OutboxState.PENDING), else_=OutboxState.SENT),
        attempts=case((again, 0), else_=OutboxMessage.attempts),
        not_before=now,
        rearm=False,
        sent_at=now,
        sent_channel=channel,
        sent_ts=ts,
        maybe_sent=False,
        last_error=None,
    )


def backoff(attempts: int) -> timedelta:
    """5 s, 10 s, 20 s ... after each failed attempt, at most MAX_BACKOFF (with jitter)."""
    delay = min(MAX_BACKOFF, timedelta(seconds=5 * 2 ** min(max(attempts - 1, 0), 10)))
    return delay * random.uniform(0.8, 1.2)


def mark_retry(
    session: Session,
    message: Outgoing,
    *,
    error: str,
    maybe_sent: bool,
    now: datetime,
    retry_after: float | None = None,
) -> bool:
    """Put the message back for a later try: after Slack's Retry-After when it gave one,
    else after :func:`backoff`."""
    wait = timedelta(seconds=retry_after) if retry_after is not None else backoff(message.attempts)
    values: dict = {}
    if not maybe_sent:  # it certainly is not in Slack: look back from the next attempt only
        values["oldest"] = None
    return settle(
        session,
        message,
        state=OutboxState.PENDING,
        not_before=now + wait,
        maybe_sent=maybe_sent,
        last_error=error[:255],
        claimed_by=None,
        **values,
    )


def release(session: Session, message: Outgoing, *, not_before: datetime) -> bool:
    """Give back a message this claim never tried (not ready yet, or the sender stopped):
    the attempt does not count, and nothing about Slack changed."""
    return settle(
        session,
        message,
        state=OutboxState.PENDING,
        not_before=not_before,
        maybe_sent=message.look_first,
        attempts=message.attempts - 1,
        claimed_by=None,
    )


def mark_final(
    session: Session, message: Outgoing, *, state: OutboxState, error: str | None = None
) -> bool:
    """Settle a message as failed for good, or as no longer wanted."""
    return settle(
        session, message, state=state, maybe_sent=False, last_error=(error or None) and error[:255]
    )


def expire(session: Session, *, now: datetime) -> int:
    """Messages whose moment has passed (a prompt for a closed week) are dropped unsent.
    A read first: the UPDATE (a write, which SQLite takes one at a time) only when needed."""
    expired = (
        (OutboxMessage.state == OutboxState.PENDING)
        & OutboxMessage.expires_at.is_not(None)
        & (OutboxMessage.expires_at <= now)
    )
    if session.scalar(select(OutboxMessage.id).where(expired).limit(1)) is None:
        return 0
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.state == OutboxState.PENDING,
            OutboxMessage.expires_at.is_not(None),
            OutboxMessage.expires_at <= now,
        )
        .values(state=OutboxState.DROPPED, last_error="expired before it could be sent")
    )
    return cast(CursorResult, result).rowcount


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
