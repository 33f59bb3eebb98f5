"""Who the sales reps are, and their time zones, as last read from Slack."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.models import Member

TZ_MAX_AGE = timedelta(days=1)


def set_sales_members(session: Session, *, user_ids: Iterable[str], now: datetime) -> list[str]:
    """Make exactly ``user_ids`` the active sales reps; return the IDs not seen before."""
    wanted = list(dict.fromkeys(user_ids))
    new: list[str] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        new.extend(_ensure_members(session, chunk, now=now))
        session.execute(
            update(Member)
            .where(Member.user_id.in_(chunk), Member.is_sales.is_(False))
            .values(is_sales=True, updated_at=now)
        )
    leaving = update(Member).where(Member.is_sales.is_(True))
    if wanted:
        leaving = leaving.where(Member.user_id.not_in(wanted))
    session.execute(leaving.values(is_sales=False, updated_at=now))
    session.flush()
    return new


def _ensure_members(
    session: Session, user_ids: list[str], *, now: datetime, is_sales: bool = True
) -> list[str]:
    """Insert a member row for each of ``user_ids`` not stored yet; return those inserted.

    Insert-or-nothing, because two processes reading the roster at once (every worker's
    first tick, a CLI prompt beside the running bot) may both find someone new: the second
    insert must not fail the whole sync with a unique violation.
    """
    if not user_ids:
        return []
    known = set(session.scalars(select(Member.user_id).where(Member.user_id.in_(user_ids))))
    missing = [u for u in user_ids if u not in known]
    if not missing:
        return []
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Member)
    inserted = session.scalars(
        insert.values(
            [
                {"user_id": u, "is_sales": is_sales, "first_seen_at": now, "updated_at": now}
                for u in missing
            ]
        )
        .on_conflict_do_nothing(index_elements=["user_id"])
        .returning(Member.user_id)
    ).all()
    return [u for u in missing if u in set(inserted)]


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
    record_profiles(session, {user_id: (tz, name)}, now=now)


def record_profiles(
    session: Session, profiles: Mapping[str, tuple[str | None, str | None]], *, now: datetime
) -> None:
    """Store (tz, display name) for many members at once, as Slack gave them."""
    ids = list(profiles)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        _ensure_members(session, chunk, now=now, is_sales=False)
        known = {
            m.user_id: m
            for m in session.scalars(select(Member).where(Member.user_id.in_(chunk))).all()
        }
        for user_id in chunk:
            member = known[user_id]
            member.tz, member.name = profiles[user_id]
            member.tz_checked_at = now
            member.updated_at = now


def mark_checked(session: Session, *, user_ids: Iterable[str], now: datetime) -> None:
    """Slack had nothing to say about these members: keep what is stored, ask again in a day."""
    ids = list(user_ids)
    for start in range(0, len(ids), 500):
        session.execute(
            update(Member)
            .where(Member.user_id.in_(ids[start : start + 500]))
            .values(tz_checked_at=now)
        )


def active_sales(session: Session) -> list[Member]:
    """The current sales reps."""
    return list(session.scalars(select(Member).where(Member.is_sales.is_(True))))


def display_names(session: Session, user_ids: set[str]) -> dict[str, str]:
    """Each known person's name as Slack last gave it (bot.models.Member), to name people
    in a channel without pinging them; people without a stored name are left out."""
    wanted = sorted(u for u in user_ids if u)
    if not wanted:
        return {}
    rows = session.execute(
        select(Member.user_id, Member.name).where(Member.user_id.in_(wanted), Member.name != "")
    )
    return {user_id: name for user_id, name in rows if name}
