"""The inbox of CRM deliveries: each one stored as received, by its source and the CRM's own
event id, before anything is done with it; then claimed by one process under a lease,
processed, and marked done, or given back with a backoff (failed after the last attempt).

So a delivery is processed at least once (a crash after storing it loses nothing: the tick
finds it) and, by its event id, once in effect (the CRM's retry of a stored delivery is
answered and ignored). Plain functions on a Session; the caller commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import CursorResult, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import CrmDelivery, InboxState

LEASE = timedelta(minutes=5)  # a claim older than this belongs to a process that died
MAX_ATTEMPTS = 10  # with the backoff below: about four hours of tries
BATCH = 50  # deliveries the tick processes at most, each time
# Done deliveries are remembered this long, so a retry is still recognised: HubSpot retries
# a delivery for up to three days. Failed ones are kept to be looked at.
KEEP = timedelta(days=30)


def backoff(attempts: int) -> timedelta:
    """How long a delivery that failed ``attempts`` times waits: 1, 2, 4 ... minutes, at
    most 60 (a CRM's API down for an hour is not unusual)."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 60))


def store(
    session: Session,
    *,
    source: str,
    delivery_id: str,
    body: str,
    headers: Mapping[str, str],
    now: datetime,
) -> int | None:
    """Store a delivery (pending, due now); its id, or None when it was stored before."""
    row = CrmDelivery(
        source=source,
        delivery_id=delivery_id[:200],
        received_at=now,
        body=body,
        headers=dict(headers) or None,
        state=InboxState.PENDING,
        attempts=0,
        due_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return None
    return row.id


def claim(
    session: Session, *, delivery_pk: int, owner: str, now: datetime, lease: timedelta = LEASE
) -> CrmDelivery | None:
    """Claim a delivery that is due (pending, or abandoned by a process whose lease ran
    out); None when it is not to be processed now."""
    row = CrmDelivery
    due = and_(
        row.state.in_((InboxState.PENDING, InboxState.PROCESSING)),
        row.due_at <= now,
        row.attempts < MAX_ATTEMPTS,
    )
    result = cast(
        CursorResult,
        session.execute(
            update(row)
            .where(row.id == delivery_pk, due)
            .values(
                state=InboxState.PROCESSING,
                claimed_by=owner,
                due_at=now + lease,
                attempts=row.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        ),
    )
    if result.rowcount != 1:
        return None
    found = session.get(CrmDelivery, delivery_pk, populate_existing=True)
    return found


def finish(session: Session, *, delivery_pk: int, owner: str, note: str, now: datetime) -> bool:
    """Mark a claimed delivery done, with what came of it; False when the claim was lost."""
    row = CrmDelivery
    result = cast(
        CursorResult,
        session.execute(
            update(row)
            .where(
                row.id == delivery_pk,
                row.claimed_by == owner,
                row.state == InboxState.PROCESSING,
            )
            .values(
                state=InboxState.DONE,
                finished_at=now,
                due_at=None,
                note=note[:255],
                last_error=None,
            )
            .execution_options(synchronize_session=False)
        ),
    )
    return result.rowcount == 1


def release(
    session: Session, *, delivery_pk: int, owner: str, error: str, now: datetime, final: bool
) -> InboxState | None:
    """Give a claimed delivery back for a later try (``pending``, after the backoff), or
    mark it ``failed`` when ``final`` or after the last attempt; None when the claim was
    lost."""
    found = session.get(CrmDelivery, delivery_pk, populate_existing=True)
    if found is None or found.claimed_by != owner or found.state != InboxState.PROCESSING:
        return None
    give_up = final or found.attempts >= MAX_ATTEMPTS
    found.state = InboxState.FAILED if give_up else InboxState.PENDING
    found.due_at = None if give_up else now + backoff(found.attempts)
    found.finished_at = now if give_up else None
    found.last_error = error[:255]
    return found.state


def due(session: Session, *, now: datetime, limit: int = BATCH) -> list[int]:
    """Deliveries due for a try: pending ones whose backoff is over, and claims whose
    process died (lease over), oldest first."""
    row = CrmDelivery
    return list(
        session.scalars(
            select(row.id)
            .where(
                or_(row.state == InboxState.PENDING, row.state == InboxState.PROCESSING),
                row.due_at <= now,
                row.attempts < MAX_ATTEMPTS,
            )
            .order_by(row.due_at, row.id)
            .limit(limit)
        )
    )


def give_up_abandoned(session: Session, *, now: datetime) -> int:
    """Mark failed the deliveries whose last attempt's process died (lease over). Looked
    for before anything is written: on SQLite even an UPDATE of no row takes the write lock."""
    row = CrmDelivery
    abandoned = and_(
        row.state == InboxState.PROCESSING,
        row.due_at <= now,
        row.attempts >= MAX_ATTEMPTS,
    )
    if session.scalar(select(row.id).where(abandoned).limit(1)) is None:
        return 0
    result = cast(
        CursorResult,
        session.execute(
            update(row)
            .where(abandoned)
            .values(
                state=InboxState.FAILED,
                due_at=None,
                finished_at=now,
                last_error="abandoned on its last attempt",
            )
            .execution_options(synchronize_session=False)
        ),
    )
    return result.rowcount or 0


def prune(session: Session, *, now: datetime, keep: timedelta = KEEP) -> int:
    """Forget done deliveries received more than ``keep`` ago (looked for first, as above)."""
    old = and_(CrmDelivery.state == InboxState.DONE, CrmDelivery.received_at < now - keep)
    if session.scalar(select(CrmDelivery.id).where(old).limit(1)) is None:
        return 0
    result = cast(
        CursorResult,
        session.execute(
            delete(CrmDelivery).where(old).execution_options(synchronize_session=False)
        ),
    )
    return result.rowcount or 0


def about_one_record(session: Session, *, source: str, prefix: str) -> list:
    """(pk, delivery_id, body) of ``source``'s deliveries whose id starts with ``prefix``
    (the adapters key a record's deliveries that way) and that were not given up: what an
    adapter compares to tell whether a delivery is still the latest about its record."""
    return list(
        session.execute(
            select(CrmDelivery.id, CrmDelivery.delivery_id, CrmDelivery.body).where(
                CrmDelivery.source == source,
                CrmDelivery.delivery_id.startswith(prefix, autoescape=True),
                CrmDelivery.state != InboxState.FAILED,
            )
        ).all()
    )
