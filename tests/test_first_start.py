"""A new installation's first start: nothing is sent for a time before it existed.

Driven through the scheduler's tick (tests/harness.py) with the fake clock and the fake Slack.
The harness fixture records an installation running since 2020; these tests delete that
record, as a brand-new database has none. Reps: UANA in Europe/Berlin, UBEN in
America/Los_Angeles; PROMPT_SCHEDULE is the default "fri 16:00", DIGEST_TIME 09:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, func, select

from bot.db import session_scope
from bot.models import Digest, Installation, OutboxMessage, Prompt
from tests.harness import tick


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def fresh(harness):
    """The harness as a brand-new installation: no start recorded yet."""
    with session_scope(harness.rt.session_factory) as s:
        s.execute(delete(Installation))
    return harness


def prompt_dms(h) -> list[str]:
    """The users the bot has DMed a weekly prompt, in order."""
    return [
        c.params["channel"]
        for c in h.slack.calls_to("chat.postMessage")
        if c.params["channel"] in ("UANA", "UBEN")
    ]


def digest_posts(h) -> list:
    return [c for c in h.slack.calls_to("chat.postMessage") if c.params["channel"] == "CDIGEST"]


def started_at(h) -> datetime | None:
    with session_scope(h.rt.session_factory) as s:
        return s.scalar(select(Installation.started_at))


def rows(h, model) -> int:
    with session_scope(h.rt.session_factory) as s:
        return s.scalar(select(func.count()).select_from(model))


def test_first_start_on_a_sunday_evening_in_los_angeles_sends_nothing_for_the_past(fresh, caplog):
    h = fresh
    caplog.set_level("INFO", logger="bot.jobs.tick")
    # Sunday 22 November, 19:00 in Los Angeles (Monday 03:00 UTC, 04:00 in Berlin). Ben's
    # Friday prompt time passed two days before the installation existed; October ended
    # before it too (its digest was due on Monday 2 November).
    first = utc("2026-11-23 03:00")
    h.clock.set(first)
    tick(h.rt)
    assert prompt_dms(h) == []
    assert digest_posts(h) == []
    assert rows(h, Prompt) == 0 and rows(h, Digest) == 0 and rows(h, OutboxMessage) == 0
    assert started_at(h) == first
    (said,) = [r.getMessage() for r in caplog.records if "first start" in r.getMessage()]
    assert "`closeloop prompt --now` sends this week's prompt at once" in said

    # Later that Sunday evening, and the bot restarted: still nothing for that week.
    h.clock.set(utc("2026-11-23 07:30"))
    tick(h.another_process())
    assert started_at(h) == first
    assert prompt_dms(h) == [] and digest_posts(h) == []

    # The first Friday after the start: each rep at 16:00 their time.
    h.clock.set(utc("2026-11-27 15:00"))  # 16:00 in Berlin
    tick(h.rt)
    assert prompt_dms(h) == ["UANA"]
    h.clock.set(utc("2026-11-28 00:00"))  # 16:00 in Los Angeles
    tick(h.rt)
    assert prompt_dms(h) == ["UANA", "UBEN"]

    # November began before the installation but ended after it: its digest is posted on
    # the first working day of December (Tuesday 1 December, 09:00 UTC), October's never.
    h.clock.set(utc("2026-12-01 09:00"))
    tick(h.rt)
    (post,) = digest_posts(h)
    with session_scope(h.rt.session_factory) as s:
        (row,) = s.scalars(select(Digest)).all()
    assert str(row.month) == "2026-11-01" and row.ts == post.response["ts"]


def test_the_start_is_the_first_tick_even_when_nothing_is_due(fresh):
    """Started on a Wednesday and down over Friday: that week's prompts were due after the
    start, so they go out when the bot is back on Saturday (as for any running bot)."""
    h = fresh
    wednesday = utc("2026-11-18 12:00")
    h.clock.set(wednesday)
    tick(h.rt)
    assert prompt_dms(h) == []
    h.clock.set(utc("2026-11-21 10:00"))  # Saturday: Berlin's 16:00 and LA's have passed
    tick(h.rt)
    assert sorted(prompt_dms(h)) == ["UANA", "UBEN"]
    assert started_at(h) == wednesday


def test_processes_starting_together_record_one_start(fresh):
    h = fresh
    h.clock.set(utc("2026-11-23 03:00"))
    h.tick_together(3)
    assert prompt_dms(h) == [] and digest_posts(h) == []
    assert rows(h, Installation) == 1
    assert started_at(h) == utc("2026-11-23 03:00")


def test_prompt_now_still_prompts_a_fresh_installation_on_demand(fresh):
    """The operator asking (`closeloop prompt --now`, here as an admin in Slack) is not the
    schedule reaching back: this week's prompt goes out."""
    from bot.jobs.prompts import queue_due_prompts
    from tests.harness import tick_of

    h = fresh
    h.clock.set(utc("2026-11-23 03:00"))
    tick(h.rt)
    result = queue_due_prompts(h.rt, tick_of(h.rt).roster, force=True, send=True)
    assert sorted(result.sent) == ["UANA", "UBEN"]
    assert sorted(prompt_dms(h)) == ["UANA", "UBEN"]
