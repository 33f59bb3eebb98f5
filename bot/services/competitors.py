"""Competitor names, normalised so "Competitor X", "competitor x " and "competitor-x" are one."""

from __future__ import annotations

import re
from typing import cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import Competitor, WinLossEntry
from bot.services.errors import DomainError

NONE_WORDS = {"", "none", "no", "n/a", "na", "-", "no competitor", "nobody"}
MAX_NAME = 120


def normalise(name: str) -> str:
    """The key two spellings of one competitor share: case, spacing and -_. ignored."""
    return re.sub(r"[\s\-_.]+", " ", name.casefold()).strip()


def is_none(name: str | None) -> bool:
    return name is None or normalise(name) in NONE_WORDS


def _follow(session: Session, competitor: Competitor) -> Competitor:
    seen = set()
    while competitor.merged_into_id is not None and competitor.id not in seen:
        seen.add(competitor.id)
        target = session.get(Competitor, competitor.merged_into_id)
        if target is None:
            break
        competitor = target
    return competitor


def find(session: Session, name: str) -> Competitor | None:
    """The competitor ``name`` means (following merges), or None if unknown."""
    found = session.scalars(select(Competitor).where(Competitor.key == normalise(name))).first()
    return _follow(session, found) if found else None


def get_or_create(session: Session, name: str | None) -> Competitor | None:
    """The competitor for a typed or picked name; None for "none"; created when new."""
    if is_none(name):
        return None
    assert name is not None
    clean = " ".join(name.split())
    if len(clean) > MAX_NAME:
        raise DomainError(f"Please keep the competitor's name under {MAX_NAME} characters.")
    existing = find(session, clean)
    if existing is not None:
        return existing
    competitor = Competitor(key=normalise(clean), name=clean)
    try:
        with session.begin_nested():
            session.add(competitor)
    except IntegrityError:  # created meanwhile by another request
        found = find(session, clean)
        assert found is not None
        return found
    return competitor


def known(session: Session, limit: int = 98) -> list[Competitor]:
    """Competitors offered in the modal's menu (not merged away), most used first."""
    from sqlalchemy import func

    uses = (
        select(WinLossEntry.competitor_id, func.count().label("n"))
        .group_by(WinLossEntry.competitor_id)
        .subquery()
    )
    rows = session.execute(
        select(Competitor)
        .outerjoin(uses, uses.c.competitor_id == Competitor.id)
        .where(Competitor.merged_into_id.is_(None))
        .order_by(func.coalesce(uses.c.n, 0).desc(), Competitor.name)
        .limit(limit)
    ).scalars()
    return list(rows)


def merge(session: Session, *, source: str, target: str) -> tuple[Competitor, Competitor, int]:
    """Merge competitor ``source`` into ``target``; return both and how many entries moved."""
    src, dst = find(session, source), find(session, target)
    if src is None:
        raise DomainError(f"No competitor called {source!r}.")
    if dst is None:
        raise DomainError(f"No competitor called {target!r}.")
    if src.id == dst.id:
        raise DomainError(f"{source!r} and {target!r} are already the same competitor.")
    moved_entries = session.execute(
        update(WinLossEntry)
        .where(WinLossEntry.competitor_id == src.id)
        .values(competitor_id=dst.id)
    )
    moved = cast(CursorResult, moved_entries).rowcount
    session.execute(
        update(Competitor).where(Competitor.merged_into_id == src.id).values(merged_into_id=dst.id)
    )
    src.merged_into_id = dst.id
    session.flush()
    return src, dst, moved


def rename(session: Session, *, old: str, new: str) -> tuple[str, Competitor]:
    """Give the competitor ``old`` means the name ``new``; return its former name and it.

    The former spelling stays known (as a name merged into the renamed one), so a rep who
    types it again lands on the same competitor. A ``new`` that another competitor already
    goes by is refused: that is a merge.
    """
    competitor = find(session, old)
    if competitor is None:
        raise DomainError(f"No competitor called {old!r}.")
    clean = " ".join(new.split())
    if is_none(clean):
        raise DomainError(f"{new!r} is not a competitor's name.")
    if len(clean) > MAX_NAME:
        raise DomainError(f"Please keep the competitor's name under {MAX_NAME} characters.")
    taken = find(session, clean)
    if taken is not None and taken.id != competitor.id:
        raise DomainError(
            f"{taken.name!r} is another competitor already; merge {old!r} into it instead."
        )
    former_name, former_key = competitor.name, competitor.key
    competitor.name = clean
    if taken is None:  # a new spelling, not just new capitals: the old one becomes an alias
        competitor.key = normalise(clean)
        session.flush()
        session.add(Competitor(key=former_key, name=former_name, merged_into_id=competitor.id))
    session.flush()
    return former_name, competitor
