from datetime import UTC, date, datetime, time

from bot.config import WeeklyTime
from bot.services.calendar import next_occurrence, occurrence_in_week, week_end, week_start, zone

FRI_16 = WeeklyTime(4, time(16, 0))


def test_week_is_monday_to_sunday_in_local_time():
    # Sunday 23:30 in Los Angeles is already Monday in UTC.
    instant = datetime(2026, 11, 23, 7, 30, tzinfo=UTC)
    assert week_start(instant, zone("America/Los_Angeles")) == date(2026, 11, 16)
    assert week_start(instant, zone("UTC")) == date(2026, 11, 23)


def test_friday_four_pm_in_each_zone():
    monday = date(2026, 11, 16)
    assert occurrence_in_week(monday, FRI_16, zone("Europe/Berlin")) == datetime(
        2026, 11, 20, 15, 0, tzinfo=UTC
    )
    assert occurrence_in_week(monday, FRI_16, zone("Asia/Kolkata")) == datetime(
        2026, 11, 20, 10, 30, tzinfo=UTC
    )


def test_dst_weeks():
    # US DST starts Sunday 2026-03-08; Friday 16:00 EST before, EDT after.
    ny = zone("America/New_York")
    assert occurrence_in_week(date(2026, 3, 2), FRI_16, ny).hour == 21
    assert occurrence_in_week(date(2026, 3, 9), FRI_16, ny).hour == 20
    # A wall time inside the gap (02:30 on 2026-03-08) moves past it, it is not lost.
    sun_0230 = WeeklyTime(6, time(2, 30))
    got = occurrence_in_week(date(2026, 3, 2), sun_0230, ny)
    assert got.astimezone(ny).hour == 3


def test_week_end_and_next_occurrence():
    berlin = zone("Europe/Berlin")
    assert week_end(date(2026, 11, 16), berlin) == datetime(2026, 11, 22, 23, 0, tzinfo=UTC)
    after = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    mon_10 = WeeklyTime(0, time(10, 0))
    assert next_occurrence(after, mon_10, berlin) == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    # strictly after: the same instant gives next week's
    assert next_occurrence(after, FRI_16, berlin) == datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def test_unknown_or_missing_zone_falls_back():
    assert zone(None, "Europe/Berlin").key == "Europe/Berlin"
    assert zone("Mars/Olympus", "UTC").key == "UTC"
