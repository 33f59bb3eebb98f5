"""Week and schedule arithmetic in a person's own time zone (pure functions)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.config import WeeklyTime


def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    """The ZoneInfo for ``name``, or ``default`` when it is missing or unknown."""
    for candidate in (name, default, "UTC"):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def week_start(instant: datetime, tz: ZoneInfo) -> date:
    """The Monday of the week (Monday to Sunday, local) that ``instant`` falls in."""
    local = instant.astimezone(tz)
    return local.date() - timedelta(days=local.weekday())


def local_instant(day: date, at, tz: ZoneInfo) -> datetime:
    """``day`` at wall-clock ``at`` in ``tz``, as UTC (a time skipped by DST moves forward)."""
    # fold=0: a wall time in a spring-forward gap lands just after the gap (02:30 -> 03:30),
    # and an ambiguous fall-back time takes its first occurrence.
    return datetime.combine(day, at).replace(tzinfo=tz, fold=0).astimezone(UTC)


def occurrence_in_week(monday: date, when: WeeklyTime, tz: ZoneInfo) -> datetime:
    """The UTC instant of ``when`` within the week that starts on ``monday``."""
    return local_instant(monday + timedelta(days=when.weekday), when.at, tz)


def week_end(monday: date, tz: ZoneInfo) -> datetime:
    """The UTC instant the local week starting ``monday`` ends (next Monday 00:00 local)."""
    return local_instant(monday + timedelta(days=7), datetime.min.time(), tz)


def next_occurrence(after: datetime, when: WeeklyTime, tz: ZoneInfo) -> datetime:
    """The first UTC instant of ``when`` strictly after ``after``."""
    monday = week_start(after, tz)
    for weeks in range(3):
        candidate = occurrence_in_week(monday + timedelta(weeks=weeks), when, tz)
        if candidate > after:
            return candidate
    raise AssertionError("unreachable: a weekly time recurs within two weeks")
