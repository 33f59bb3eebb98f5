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
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Executable,
    Table,
    case,
    delete,
    event,
    false,
    func,
    null,
    or_,
    select,
    true,
    update,
)
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
    payload: dict | None = None  # a CALL's request, rendered at claim time (its kind's send)


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
    # One statement either way, built once (a form's ack waits for it):
    # INSERT ... ON CONFLICT, which SQLite and PostgreSQL share.
    statement = _upsert(session.get_bind().dialect.name, again)
    inserted = session.execute(statement, values)
    return again or inserted.first() is not None


_OUTBOX = cast(Table, OutboxMessage.__table__)
_UPSERTS: dict[tuple[str, bool], Executable] = {}


def _upsert(dialect: str, again: bool) -> Executable:
    """The enqueueing statement for ``dialect``: insert-or-nothing, or (``again``) insert or
    make a settled one pending again with the new values, and mark one being sent to go once
    more (``rearm``). Every SET expression reads the row as it was (both databases)."""
    statement = _UPSERTS.get((dialect, again))
    if statement is not None:
        return statement
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_OUTBOX)
    c = _OUTBOX.c
    if not again:
        statement = insert.on_conflict_do_nothing(index_elements=[c.key]).returning(c.id)
    else:
        settled = c.state.not_in((OutboxState.PENDING, OutboxState.SENDING))

        def renewed(name: str, value: Any = None) -> Any:
            new = insert.excluded[name] if value is None else value
            return case((settled, new), else_=c[name])

        statement = insert.on_conflict_do_update(
            index_elements=[c.key],
            set_={
                **{
                    name: renewed(name)
                    for name in ("state", "not_before", "expires_at", "attempts")
                    + ("text", "blocks", "channel", "ts")
                },
                "claimed_by": renewed("claimed_by", null()),
                "claimed_at": renewed("claimed_at", null()),
                "last_error": renewed("last_error", null()),
                "rearm": case(
                    (c.state == OutboxState.SENDING, true()), (settled, false()), else_=c.rearm
                ),
            },
        )
    _UPSERTS[(dialect, again)] = statement
    return statement


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
    c = _OUTBOX.c
    return or_(
        (c.state == OutboxState.PENDING) & (c.not_before <= now),
        (c.state == OutboxState.SENDING) & (c.claimed_at < now - lease),
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
    same row; PostgreSQL skips rows another claim has locked instead of waiting for them (by
    ``keys``, it waits for that claim's transaction and then finds them taken). A message
    whose claim lapsed while ``sending`` comes back with ``look_first``: it may be in Slack.
    """
    m = _OUTBOX.c  # Core, not the unit of work: the claim is on every send's path
    chosen: Any
    if keys is not None:  # a request's own few messages: no order, no limit to apply
        chosen = m.key.in_(keys)
    else:
        # What people are waiting for first, a fan-out's DMs after it, each oldest first
        # (two reads rather than one sorted on the kind, which would sort a whole fan-out).
        found: list[int] = []
        for part in (m.kind.not_in(FAN_OUT), m.kind.in_(FAN_OUT)):
            if len(found) >= limit:
                break
            found += session.scalars(
                select(m.id)
                .where(_due(now, lease), part)
                .order_by(m.id)
                .limit(limit - len(found))
                .with_for_update(skip_locked=True)
            )
        if not found:
            return []
        chosen = m.id.in_(found)
    token = f"{owner}:{uuid.uuid4().hex[:12]}"[-64:]
    rows = session.execute(
        update(_OUTBOX)
        .where(chosen, _due(now, lease))  # re-checked: a racing claim took none
        .values(
            state=OutboxState.SENDING,
            claimed_by=token,
            claimed_at=now,
            attempts=m.attempts + 1,
            oldest=func.coalesce(m.oldest, f"{time.time() - CLOCK_SKEW:.6f}"),
            # Look before sending: an earlier try may have reached Slack, or a claim that
            # lapsed (its sender died or stalled mid-call) may have.
            maybe_sent=or_(m.maybe_sent, m.state == OutboxState.SENDING),
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
            m.maybe_sent,
        )
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
                look_first=row.maybe_sent,
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
    c = _OUTBOX.c  # Core, not the unit of work: every send is settled here
    result = session.execute(
        update(_OUTBOX)
        .where(c.id == message.id, c.state == OutboxState.SENDING, c.claimed_by == message.token)
        .values(**values)
    )
    return cast(CursorResult, result).rowcount == 1


def mark_sent(session: Session, message: Outgoing, *, channel: str, ts: str, now: datetime) -> bool:
    """Settle a message as sent (False: this claim no longer holds it; nothing written). One
    marked to go again (a newer edit arrived meanwhile) is pending again instead."""
    again = _OUTBOX.c.rearm.is_(True)
    return settle(
        session,
        message,
        state=case((again, OutboxState.PENDING), else_=OutboxState.SENT),
        attempts=case((again, 0), else_=_OUTBOX.c.attempts),
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


# Settled messages are kept this long (to look into what was sent, and as the idempotency
# keys' memory while anything could still enqueue the same key), then deleted: a notice keeps
# its text, and a year of weekly fan-outs would otherwise stay in the table for good.
RETENTION = timedelta(days=90)


def prune(session: Session, *, now: datetime, keep: timedelta = RETENTION) -> int:
    """Delete settled messages (sent, failed, dropped) created more than ``keep`` ago."""
    c = _OUTBOX.c
    result = session.execute(
        delete(_OUTBOX).where(
            c.state.in_((OutboxState.SENT, OutboxState.FAILED, OutboxState.DROPPED)),
            c.created_at < now - keep,
        )
    )
    return cast(CursorResult, result).rowcount


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
