"""Who the sales reps are, and their time zones, as last read from Slack."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.models import Member

TZ_MAX_AGE = timedelta(days=1)


def set_sales_members(session: Session, *, user_ids: Iterable[str], now: datetime) -> list[str]:
    """Make exactly ``user_ids`` the active sales reps; return the IDs not seen before."""
    wanted = list(dict.fromkeys(user_ids))
    known = (
        {
            m.user_id: m
            for m in session.scalars(select(Member).where(Member.user_id.in_(wanted))).all()
        }
        if wanted
        else {}
    )
    new: list[str] = []
    for user_id in wanted:
        member = known.get(user_id)
        if member is None:
            session.add(Member(user_id=user_id, is_sales=True, first_seen_at=now, updated_at=now))
            new.append(user_id)
        elif not member.is_sales:
            member.is_sales = True
    leaving = update(Member).where(Member.is_sales.is_(True))
    if wanted:
        leaving = leaving.where(Member.user_id.not_in(wanted))
    session.execute(leaving.values(is_sales=False, updated_at=now))
    session.flush()
    return new


def needing_profile(session: Session, *, now: datetime) -> list[str]:
    """Active reps whose time zone was never read, or was read more than a day ago."""
    stale = now - TZ_MAX_AGE
    return list(
        session.scalars(
            select(Member.user_id).where(
                Member.is_sales.is_(True),
                (Member.tz_checked_at.is_(None)) | (Member.tz_checked_at < stale),
            )
        )
    )


def record_profile(
    session: Session, *, user_id: str, tz: str | None, name: str | None, now: datetime
) -> None:
    """Store what users.info said about a member (``tz`` None when Slack gave none)."""
    member = session.get(Member, user_id)
    if member is None:
        member = Member(user_id=user_id, first_seen_at=now)
        session.add(member)
    member.tz = tz
    member.name = name
    member.tz_checked_at = now
    member.updated_at = now


def active_sales(session: Session) -> list[Member]:
    """The current sales reps."""
    return list(session.scalars(select(Member).where(Member.is_sales.is_(True))))
