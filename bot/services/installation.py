"""When this installation began: the scheduled work never reaches back before it.

The start is recorded by the scheduler's first tick (``closeloop run``, ``closeloop
scheduler`` or ``closeloop tick``), not by ``closeloop migrate``: every command migrates, and
the README's Procfile runs ``migrate`` as a release step, possibly days before the bot is
first started with a filled-in ``.env``. What a new user expects is "from the moment the bot
runs": a prompt whose local time passed before that tick is not sent (``closeloop prompt
--now`` still sends this week's on demand), and the digest of a month that ended before it is
never posted by the schedule (``closeloop digest --post --month`` still posts one on demand).

An installation upgraded from before this record existed is given the earliest activity its
database holds (migration 0005), so an upgrade holds back nothing it would have sent.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import Installation

ROW_ID = 1  # the one row


def started_at(session: Session) -> datetime | None:
    """When this installation began, or None before its first tick."""
    row = session.get(Installation, ROW_ID)
    return row.started_at if row is not None else None


def record_start(session: Session, *, now: datetime) -> datetime:
    """When this installation began, recorded as ``now`` if this is its first tick (once,
    whichever process gets there first: the fixed primary key settles a race)."""
    found = started_at(session)
    if found is not None:
        return found
    try:
        with session.begin_nested():
            session.add(Installation(id=ROW_ID, started_at=now))
    except IntegrityError:  # another process recorded it a moment ago
        session.expire_all()
        found = started_at(session)
        assert found is not None
        return found
    return now
