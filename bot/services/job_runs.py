"""Jobs that run once a day or so (the CRM reconciliation), once whichever process ticks.

Each job has a row (``job_runs``, by name) saying when it is next due. A run is claimed by the
UPDATE that moves ``next_at`` on from a time already passed: of several processes (or a
restart, or ``closeloop tick`` from cron) only the one whose UPDATE changed the row runs it.
Plain functions on a Session; the caller commits (the claim before the run, the outcome after).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import CursorResult, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import JobRun


@dataclass(frozen=True)
class Claimed:
    """A run this process holds: when it started, and when the last good run started."""

    started_at: datetime
    last_ok_at: datetime | None


def claim(session: Session, *, name: str, now: datetime, every: timedelta) -> Claimed | None:
    """Claim the job's run when it is due (a job never run is due now): its next run is
    then ``every`` from now. None when it is not due, or another process claimed it."""
    # Looked at before anything is written: the tick asks every minute, and on SQLite even
    # an UPDATE of no row takes the write lock.
    found = session.get(JobRun, name)
    if found is not None and found.next_at > now:
        return None
    if found is None:
        try:
            with session.begin_nested():
                session.add(JobRun(name=name, next_at=now))
        except IntegrityError:  # another process's first run got there first
            pass
    result = cast(
        CursorResult,
        session.execute(
            update(JobRun)
            .where(JobRun.name == name, JobRun.next_at <= now)
            .values(next_at=now + every, started_at=now)
            .execution_options(synchronize_session=False)
        ),
    )
    if result.rowcount != 1:
        return None
    row = session.get(JobRun, name, populate_existing=True)
    assert row is not None
    return Claimed(started_at=now, last_ok_at=row.ok_at)


def finished(
    session: Session,
    *,
    name: str,
    started_at: datetime,
    error: str | None,
    retry_at: datetime | None = None,
) -> None:
    """Record how the run claimed at ``started_at`` went; a failed one is due again at
    ``retry_at`` (when earlier than its next run)."""
    row = session.get(JobRun, name, populate_existing=True)
    if row is None or row.started_at != started_at:
        return  # a later run was claimed meanwhile: it records its own outcome
    row.last_error = error[:255] if error else None
    if error is None:
        row.ok_at = started_at
    elif retry_at is not None and retry_at < row.next_at:
        row.next_at = retry_at
