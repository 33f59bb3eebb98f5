"""Weekly schedules end to end, in each rep's own time zone, through the scheduler's tick.

The clock is driven across the Fridays and Mondays around the 2026 and 2027 daylight-saving
changes (the US changes on the second Sunday of March and the first of November, the EU on
the last Sundays of March and October, so for a week or more New York and Berlin are an
hour off their usual distance), a rep in a half-hour zone (Asia/Kolkata, UTC+5:30), and a
rep whose Slack profile has no ``tz`` until it gains one.

Defaults: PROMPT_SCHEDULE "fri 16:00" and REMINDER_SCHEDULE "mon 10:00", local. Every
expected instant below was worked out by hand from the published offsets, never with the
code under test. The tick runs every minute from two minutes before each expected DM to two
minutes after it, and every hour elsewhere in the day around it; the test asserts the exact
minute of each DM and that it is the only one of its kind.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.models import Digest, Member, Prompt
from tests.harness import tick

DEFAULT_TZ = "America/Chicago"
MINUTE = timedelta(minutes=1)
DENSE = 2  # minutes either side of an expected DM, ticked every minute
SPARSE = timedelta(hours=1)


@pytest.fixture
def settings_overrides():
    return {"DEFAULT_TIMEZONE": DEFAULT_TZ}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def h(harness):
    """The harness with every monthly digest of 2026-2027 recorded as posted: the digest is
    not under test here, and this keeps each tick from rendering its chart."""
    with session_scope(harness.rt.session_factory) as s:
        for year in (2026, 2027):
            for month in range(1, 13):
                s.add(
                    Digest(
                        month=date(year, month, 1),
                        channel="CDIGEST",
                        ts=f"{year}{month:02d}.000001",
                        chart_file_id="F0",
                    )
                )
    return harness


def reps(h, **zones: str | None) -> None:
    """Make exactly these users the sales team, each with this ``tz`` (None: no tz)."""
    for user_id, tz in zones.items():
        h.slack.add_user(user_id, tz=tz, name=user_id.lower())
    h.slack.set_usergroup("SSALES", list(zones))


class Recorder:
    """Ticks at chosen instants and notes, for each DM the bot sends, when and what."""

    def __init__(self, h) -> None:
        self.h = h
        self.seen = len(h.slack.calls)
        self.dms: dict[str, list[tuple[datetime, str, str]]] = defaultdict(list)
        self.ticks: list[datetime] = []

    def tick_at(self, instants) -> None:
        h = self.h
        for instant in sorted(set(instants)):
            assert not self.ticks or instant > self.ticks[-1], "time only moves forward"
            h.clock.set(instant)
            tick(h.rt)
            self.ticks.append(instant)
            calls = h.slack.calls[self.seen :]
            self.seen += len(calls)
            for call in calls:
                if call.method != "chat.postMessage" or not call.ok:
                    continue
                text = call.params.get("text") or ""
                kind = "reminder" if text.startswith("*Reminder:*") else "prompt"
                self.dms[call.params["channel"]].append((instant, kind, text))

    def of(self, user_id: str, kind: str) -> list[tuple[datetime, str]]:
        return [(when, text) for when, k, text in self.dms[user_id] if k == kind]


def around(expected: list[datetime], start: datetime, end: datetime) -> list[datetime]:
    """Every SPARSE from ``start`` to ``end``, and every minute within DENSE of each
    expected instant."""
    instants = []
    t = start
    while t <= end:
        instants.append(t)
        t += SPARSE
    for e in expected:
        instants.extend(e + k * MINUTE for k in range(-DENSE, DENSE + 1))
    return instants


# (Friday, {rep: (prompt at, reminder at), in UTC})
NY, BERLIN = "UNY", "UBER"
SEASONS = {
    # US springs forward on Sun 8 Mar, the EU on Sun 29 Mar
    "2026-spring": [
        (  # before both; New York changes between the prompt and the reminder
            "2026-03-06",
            {
                NY: ("2026-03-06 21:00", "2026-03-09 14:00"),
                BERLIN: ("2026-03-06 15:00", "2026-03-09 09:00"),
            },
        ),
        (  # after the US change, before the EU's: New York is five hours behind Berlin
            "2026-03-13",
            {
                NY: ("2026-03-13 20:00", "2026-03-16 14:00"),
                BERLIN: ("2026-03-13 15:00", "2026-03-16 09:00"),
            },
        ),
        (  # still between; Berlin changes between the prompt and the reminder
            "2026-03-27",
            {
                NY: ("2026-03-27 20:00", "2026-03-30 14:00"),
                BERLIN: ("2026-03-27 15:00", "2026-03-30 08:00"),
            },
        ),
        (  # after both
            "2026-04-03",
            {
                NY: ("2026-04-03 20:00", "2026-04-06 14:00"),
                BERLIN: ("2026-04-03 14:00", "2026-04-06 08:00"),
            },
        ),
    ],
    # the EU falls back on Sun 25 Oct, the US on Sun 1 Nov
    "2026-fall": [
        (  # before both; Berlin changes between the prompt and the reminder
            "2026-10-23",
            {
                NY: ("2026-10-23 20:00", "2026-10-26 14:00"),
                BERLIN: ("2026-10-23 14:00", "2026-10-26 09:00"),
            },
        ),
        (  # between; New York changes between the prompt and the reminder
            "2026-10-30",
            {
                NY: ("2026-10-30 20:00", "2026-11-02 15:00"),
                BERLIN: ("2026-10-30 15:00", "2026-11-02 09:00"),
            },
        ),
        (  # after both
            "2026-11-06",
            {
                NY: ("2026-11-06 21:00", "2026-11-09 15:00"),
                BERLIN: ("2026-11-06 15:00", "2026-11-09 09:00"),
            },
        ),
    ],
    # US springs forward on Sun 14 Mar, the EU on Sun 28 Mar
    "2027-spring": [
        (
            "2027-03-12",
            {
                NY: ("2027-03-12 21:00", "2027-03-15 14:00"),
                BERLIN: ("2027-03-12 15:00", "2027-03-15 09:00"),
            },
        ),
        (
            "2027-03-19",
            {
                NY: ("2027-03-19 20:00", "2027-03-22 14:00"),
                BERLIN: ("2027-03-19 15:00", "2027-03-22 09:00"),
            },
        ),
        (
            "2027-03-26",
            {
                NY: ("2027-03-26 20:00", "2027-03-29 14:00"),
                BERLIN: ("2027-03-26 15:00", "2027-03-29 08:00"),
            },
        ),
        (
            "2027-04-02",
            {
                NY: ("2027-04-02 20:00", "2027-04-05 14:00"),
                BERLIN: ("2027-04-02 14:00", "2027-04-05 08:00"),
            },
        ),
    ],
    # the EU falls back on Sun 31 Oct, the US on Sun 7 Nov
    "2027-fall": [
        (
            "2027-10-29",
            {
                NY: ("2027-10-29 20:00", "2027-11-01 14:00"),
                BERLIN: ("2027-10-29 14:00", "2027-11-01 09:00"),
            },
        ),
        (
            "2027-11-05",
            {
                NY: ("2027-11-05 20:00", "2027-11-08 15:00"),
                BERLIN: ("2027-11-05 15:00", "2027-11-08 09:00"),
            },
        ),
        (
            "2027-11-12",
            {
                NY: ("2027-11-12 21:00", "2027-11-15 15:00"),
                BERLIN: ("2027-11-12 15:00", "2027-11-15 09:00"),
            },
        ),
    ],
}


def run_week(h, recorder, friday: str, expected: dict[str, tuple[str, str]]) -> None:
    """Friday 11:00 UTC to Saturday 00:00, then Monday 06:00 to 17:00: every rep gets the
    prompt at its minute, then the reminder at its minute, once each."""
    fri = utc(f"{friday} 00:00")
    mon = fri + timedelta(days=3)
    prompts = {rep: utc(p) for rep, (p, _r) in expected.items()}
    reminders = {rep: utc(r) for rep, (_p, r) in expected.items()}
    before = {rep: len(recorder.dms[rep]) for rep in expected}
    recorder.tick_at(
        around(list(prompts.values()), fri + timedelta(hours=11), fri + timedelta(hours=24))
    )
    recorder.tick_at(
        around(list(reminders.values()), mon + timedelta(hours=6), mon + timedelta(hours=17))
    )
    week_of = f"week of {date.fromisoformat(friday) - timedelta(days=4):%b} "
    week_of += str((date.fromisoformat(friday) - timedelta(days=4)).day)
    for rep in expected:
        this_week = recorder.dms[rep][before[rep] :]
        assert [(when, kind) for when, kind, _text in this_week] == [
            (prompts[rep], "prompt"),
            (reminders[rep], "reminder"),
        ], f"{rep} in the week of {friday}"
        assert all(week_of in text for _when, _kind, text in this_week), week_of


@pytest.mark.parametrize("season", list(SEASONS))
def test_prompt_and_reminder_at_local_time_across_daylight_saving_changes(h, season):
    reps(h, **{NY: "America/New_York", BERLIN: "Europe/Berlin"})
    recorder = Recorder(h)
    for friday, expected in SEASONS[season]:
        run_week(h, recorder, friday, expected)
    with session_scope(h.rt.session_factory) as s:
        weeks = s.execute(select(Prompt.user_id, Prompt.week_start, Prompt.tz)).all()
    assert len(weeks) == 2 * len(SEASONS[season])  # one prompt per rep per week, no more
    assert {tz for _u, _w, tz in weeks} == {"America/New_York", "Europe/Berlin"}


def test_half_hour_zone_and_a_rep_without_a_time_zone(h):
    """Kolkata is UTC+5:30 all year: 16:00 there is 10:30 UTC. A rep whose profile has no tz
    gets DEFAULT_TIMEZONE's time (Chicago, UTC-6 in November); when the profile gains a tz,
    the next week follows it."""
    reps(h, UKOL="Asia/Kolkata", UNOTZ=None)
    recorder = Recorder(h)
    run_week(
        h,
        recorder,
        "2026-11-20",
        {
            "UKOL": ("2026-11-20 10:30", "2026-11-23 04:30"),
            "UNOTZ": ("2026-11-20 22:00", "2026-11-23 16:00"),
        },
    )
    with session_scope(h.rt.session_factory) as s:
        assert s.get(Member, "UNOTZ").tz is None

    # On Tuesday the rep sets a time zone in Slack; the roster's daily profile refresh
    # picks it up while the tick keeps running through the week.
    h.slack.add_user("UNOTZ", tz="Europe/Berlin", name="unotz")
    tuesday = utc("2026-11-24 00:00")
    recorder.tick_at([tuesday + k * timedelta(hours=3) for k in range(8 * 3)])
    with session_scope(h.rt.session_factory) as s:
        assert s.get(Member, "UNOTZ").tz == "Europe/Berlin"
    run_week(
        h,
        recorder,
        "2026-11-27",
        {
            "UKOL": ("2026-11-27 10:30", "2026-11-30 04:30"),
            "UNOTZ": ("2026-11-27 15:00", "2026-11-30 09:00"),
        },
    )
    with session_scope(h.rt.session_factory) as s:
        rows = s.execute(
            select(Prompt.user_id, Prompt.week_start, Prompt.tz).order_by(
                Prompt.user_id, Prompt.week_start
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("UKOL", date(2026, 11, 16), "Asia/Kolkata"),
        ("UKOL", date(2026, 11, 23), "Asia/Kolkata"),
        ("UNOTZ", date(2026, 11, 16), DEFAULT_TZ),
        ("UNOTZ", date(2026, 11, 23), "Europe/Berlin"),
    ]
