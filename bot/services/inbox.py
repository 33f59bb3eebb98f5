"""The inbox of Events API events: every delivery is stored by its ``event_id`` with its
payload before it is processed, claimed by one process under a lease, and marked done only
after its listener finished. So an event is processed at least once (a failed or abandoned
claim is tried again) and, by its event_id, once in effect (a retry of a done event, or of
one another process is working on, is ignored).

Plain functions on a Session; the caller commits (bot.event_inbox drives them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import CursorResult, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import INBOX_FINISHED, InboundEvent, InboxState

LEASE = timedelta(minutes=5)  # a claim older than this belongs to a process that died
MAX_ATTEMPTS = 5
KEEP = timedelta(days=7)  # finished events are remembered this long (Slack retries for ~5 min)


def backoff(attempts: int) -> timedelta:
    """How long the tick waits before it replays an event that failed ``attempts`` times
    (Slack's own retries do not wait for it): 1, 2, 4, 8 ... minutes, at most 30."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 30))


def claim(
    session: Session,
    *,
    event_id: str,
    payload: dict,
    owner: str,
    now: datetime,
    reclaim_own: bool = False,
    lease: timedelta = LEASE,
    max_attempts: int = MAX_ATTEMPTS,
) -> int | None:
    """Store the event (on its first delivery) and claim it for ``owner``; return the attempt
    number, or None when it must not be processed now: done, given up, or claimed by another
    process whose lease is still running.

    ``reclaim_own``: the caller knows ``owner`` is not processing it any more (a claim it
    could not release, e.g. because the database was away), so its own claim is taken over.
    """
    try:
        with session.begin_nested():
            session.add(
                InboundEvent(
                    event_id=event_id,
                    event_type=str((payload.get("event") or {}).get("type") or "")[:64] or None,
                    payload=payload,
                    state=InboxState.PROCESSING,
                    attempts=1,
                    claimed_by=owner,
                    due_at=now + lease,
                    received_at=now,
                )
            )
        return 1
    except IntegrityError:
        pass  # delivered before: take it over only if nobody is (or should be) on it
    row = InboundEvent
    claimable = or_(
        row.state == InboxState.PENDING,
        and_(row.state == InboxState.PROCESSING, row.due_at <= now),
    )
    if reclaim_own:
        mine = and_(row.state == InboxState.PROCESSING, row.claimed_by == owner)
        claimable = or_(claimable, mine)
    claimed = session.execute(
        update(row)
        .where(row.event_id == event_id, row.attempts < max_attempts, claimable)
        .values(
            state=InboxState.PROCESSING,
            claimed_by=owner,
            due_at=now + lease,
            attempts=row.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    taken = cast(CursorResult, claimed).rowcount
    if not taken:
        return None
    return session.scalar(select(row.attempts).where(row.event_id == event_id))


def finish(session: Session, *, event_id: str, owner: str, now: datetime) -> bool:
    """Mark the event ``owner`` processed as done (its payload is no longer needed); False
    when the claim was no longer ``owner``'s (its lease ran out and another took it over)."""
    finished = session.execute(
        update(InboundEvent)
        .where(
            InboundEvent.event_id == event_id,
            InboundEvent.state == InboxState.PROCESSING,
            InboundEvent.claimed_by == owner,
        )
        .values(
            state=InboxState.DONE,
            payload=None,
            claimed_by=None,
            due_at=None,
            finished_at=now,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(cast(CursorResult, finished).rowcount)


@dataclass(frozen=True)
class Released:
    state: str  # PENDING (tried again later) or FAILED (that was the last attempt)
    attempts: int


def release(
    session: Session,
    *,
    event_id: str,
    owner: str,
    error: str,
    now: datetime,
    max_attempts: int = MAX_ATTEMPTS,
) -> Released | None:
    """Give back ``owner``'s claim on an event whose processing failed: Slack's retry or,
    after :func:`backoff`, the tick's replay processes it again; after ``max_attempts`` it
    is given up. None when the claim was no longer ``owner``'s."""
    attempts = session.scalar(
        select(InboundEvent.attempts).where(
            InboundEvent.event_id == event_id,
            InboundEvent.state == InboxState.PROCESSING,
            InboundEvent.claimed_by == owner,
        )
    )
    if attempts is None:
        return None
    last = attempts >= max_attempts
    values: dict = {"claimed_by": None, "last_error": error[:255]}
    if last:
        values.update(state=InboxState.FAILED, due_at=None, finished_at=now)
    else:
        values.update(state=InboxState.PENDING, due_at=now + backoff(attempts))
    released = session.execute(
        update(InboundEvent)
        .where(
            InboundEvent.event_id == event_id,
            InboundEvent.state == InboxState.PROCESSING,
            InboundEvent.claimed_by == owner,
            InboundEvent.attempts == attempts,
        )
        .values(values)
        .execution_options(synchronize_session=False)
    )
    changed = cast(CursorResult, released).rowcount
    if not changed:
        return None
    return Released(InboxState.FAILED if last else InboxState.PENDING, attempts)


@dataclass(frozen=True)
class Due:
    event_id: str
    payload: dict


def due_for_replay(
    session: Session, *, now: datetime, limit: int = 50, max_attempts: int = MAX_ATTEMPTS
) -> list[Due]:
    """Unfinished events the tick should process again: released ones whose backoff is over,
    and claims whose lease ran out (their process died or hung), oldest first."""
    rows = session.execute(
        select(InboundEvent.event_id, InboundEvent.payload)
        .where(
            InboundEvent.state.in_((InboxState.PENDING, InboxState.PROCESSING)),
            InboundEvent.due_at <= now,
            InboundEvent.attempts < max_attempts,
            InboundEvent.payload.is_not(None),
        )
        .order_by(InboundEvent.received_at)
        .limit(limit)
    ).all()
    return [Due(event_id, payload) for event_id, payload in rows]


@dataclass(frozen=True)
class GivenUp:
    event_id: str
    event_type: str | None
    attempts: int
    last_error: str | None


def give_up_abandoned(
    session: Session, *, now: datetime, max_attempts: int = MAX_ATTEMPTS
) -> list[GivenUp]:
    """Claims whose last allowed attempt never finished (its lease ran out): failed now."""
    stale = (
        InboundEvent.state.in_((InboxState.PENDING, InboxState.PROCESSING)),
        InboundEvent.due_at <= now,
        or_(InboundEvent.attempts >= max_attempts, InboundEvent.payload.is_(None)),
    )
    rows = session.execute(
        select(
            InboundEvent.event_id,
            InboundEvent.event_type,
            InboundEvent.attempts,
            InboundEvent.last_error,
        ).where(*stale)
    ).all()
    given_up = []
    for event_id, event_type, attempts, last_error in rows:
        failed = session.execute(
            update(InboundEvent)
            .where(InboundEvent.event_id == event_id, *stale)
            .values(
                state=InboxState.FAILED,
                claimed_by=None,
                due_at=None,
                finished_at=now,
                last_error=last_error or "abandoned: its processing never finished",
            )
            .execution_options(synchronize_session=False)
        )
        changed = cast(CursorResult, failed).rowcount
        if changed:
            given_up.append(GivenUp(event_id, event_type, attempts, last_error))
    return given_up


def prune(session: Session, *, now: datetime, keep: timedelta = KEEP) -> int:
    """Forget finished (done or failed) events received more than ``keep`` ago."""
    pruned = session.execute(
        delete(InboundEvent)
        .where(
            InboundEvent.state.in_(INBOX_FINISHED),
            InboundEvent.received_at < now - keep,
        )
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult, pruned).rowcount or 0


def counts(session: Session) -> dict[str, int]:
    """Stored events per state."""
    return dict(
        session.execute(select(InboundEvent.state, func.count()).group_by(InboundEvent.state)).all()
    )
