"""The Monday lead report through the fake Slack: posted by the tick at LEAD_REPORT_SCHEDULE
in LEAD_REPORT_TIMEZONE, exactly once across ticks, processes and restarts, and when Slack
fails its post (each fault the suite injects); no report for a week without leads or one
that ended before the installation began; and ``closeloop leads report``."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from sqlalchemy import delete, select

from bot.db import session_scope
from bot.jobs import lead_report as report_jobs
from bot.models import Digest, Installation, LeadReport, OutboxMessage
from tests.conftest import closeloop
from tests.harness import tick
from tests.test_faults_slack import (
    ABSORBED,
    ALL,
    CLIENT_TIMEOUT,
    EVERY_TRY,
    RETRY_WAIT,
    check_the_fault_happened,
    delivered,
    inject,
    statuses,
    top_level_messages,
    tries_to,
    wait_out_retry_after,
)
from tests.test_lead_report import W49, WEBINAR, add_lead, build_week

CHANNEL = "CLEADS"
# 09:00 on Monday 7 December in New York (EST): the report on week 49 is due
MON_0900_NEW_YORK = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)


@pytest.fixture
def settings_overrides():
    return {
        "LEAD_REPORT_CHANNEL": CHANNEL,
        "LEAD_REPORT_TIMEZONE": "America/New_York",
        "OUTBOX_WORKERS": "1",
    }


@pytest.fixture
def h(harness):
    """The harness with the lead report's channel, November's digest recorded as posted (it
    is not under test), and the short client timeouts of tests/test_faults_slack.py."""
    harness.slack.add_channel(CHANNEL, name="lead-report")
    with session_scope(harness.rt.session_factory) as s:
        s.add(Digest(month=date(2026, 11, 1), channel="CDIGEST", ts="1.000001", chart_file_id="F"))
    for client in (harness.rt.client, harness.rt.outbox.client):
        client.timeout = CLIENT_TIMEOUT
        for handler in client.retry_handlers:
            if hasattr(handler, "interval_calculator"):
                handler.interval_calculator = FixedValueRetryIntervalCalculator(RETRY_WAIT)
    return harness


def build(h) -> None:
    with session_scope(h.rt.session_factory) as s:
        build_week(s)


def reports(slack, *, include_failed=True):
    return [
        c
        for c in slack.calls_to("chat.postMessage", include_failed=include_failed)
        if c.params["channel"] == CHANNEL
    ]


def body(call) -> str:
    return json.dumps(call.params.get("blocks"), ensure_ascii=False) + call.params["text"]


def stored_rows(h) -> list[LeadReport]:
    with session_scope(h.rt.session_factory) as s:
        rows = list(s.scalars(select(LeadReport)))
        s.expunge_all()
        return rows


def assert_posted_once(h) -> str:
    (post,) = reports(h.slack)
    assert post.ok and not post.params.get("thread_ts")
    text = body(post)
    assert "Lead hand-off report — week of Mon 30 Nov 2026 (2026-W49)" in text
    # in New York, Monday 7 December 00:00 UTC is Sunday evening: 13 webinar leads, 6 rejected
    assert ":warning: *Webinar*: 50% (6 of 12) of its rated leads rejected, above 30%" in text
    assert text.count(":warning:") == 2  # exactly that source: the flag and its line
    assert "<@" not in text and "<!" not in text  # nobody pinged
    (row,) = stored_rows(h)
    assert row.week_start == date(2026, 11, 30)
    assert (row.channel, row.ts) == (CHANNEL, post.response["ts"])
    assert row.posted_at is not None
    return post.response["ts"]


def test_posted_at_nine_on_monday_in_its_time_zone_exactly_once(h):
    slack, clock = h.slack, h.clock
    build(h)
    clock.set(datetime(2026, 12, 7, 13, 59, tzinfo=UTC))  # 08:59 in New York: not yet
    tick(h.rt)
    assert reports(slack) == [] and stored_rows(h) == []
    clock.set(MON_0900_NEW_YORK)
    tick(h.rt)
    ts = assert_posted_once(h)

    # ticking again, a restarted process, an explicit queue, days later: nothing more
    clock.advance(minutes=1)
    tick(h.rt)
    tick(h.another_process())
    assert report_jobs.queue(h.rt, W49) is False
    assert report_jobs.queue(h.another_process(), W49) is False
    clock.advance(days=3)
    tick(h.rt)
    assert assert_posted_once(h) == ts
    assert len(top_level_messages(slack, CHANNEL)) == 1
    assert slack.server_errors == []


def test_several_processes_ticking_together_post_once(h):
    build(h)
    h.clock.set(MON_0900_NEW_YORK)
    h.tick_together(3)
    assert_posted_once(h)


def test_a_bot_down_on_monday_posts_when_it_comes_back_once(h):
    build(h)
    h.clock.set(datetime(2026, 12, 9, 12, 0, tzinfo=UTC))  # Wednesday
    rt = h.another_process()
    tick(rt)
    assert_posted_once(h)
    tick(h.another_process())
    assert len(reports(h.slack)) == 1


def test_no_report_for_a_week_without_leads(h):
    h.clock.set(MON_0900_NEW_YORK)
    with session_scope(h.rt.session_factory) as s:  # only the week before had a lead
        add_lead(s, WEBINAR, status="accepted", hours=1, handed="2026-11-25 15:00")
    tick(h.rt)
    h.clock.advance(minutes=1)
    tick(h.rt)
    assert reports(h.slack) == [] and stored_rows(h) == []


def test_a_week_that_ended_before_the_installation_began_is_never_posted(h):
    build(h)
    with session_scope(h.rt.session_factory) as s:
        s.execute(delete(Installation))
    # first started on Tuesday 8 December: week 49 ended before it
    h.clock.set(datetime(2026, 12, 8, 15, 0, tzinfo=UTC))
    tick(h.rt)
    h.clock.advance(minutes=1)
    tick(h.rt)
    assert reports(h.slack) == [] and stored_rows(h) == []


def test_a_week_that_ended_after_the_installation_began_is_posted(h):
    build(h)
    with session_scope(h.rt.session_factory) as s:
        s.execute(delete(Installation))
    h.clock.set(datetime(2026, 12, 4, 12, 0, tzinfo=UTC))  # first tick on Friday of week 49
    tick(h.rt)
    h.clock.set(MON_0900_NEW_YORK)
    tick(h.rt)
    assert_posted_once(h)


def test_not_in_channel_is_retried_until_the_bot_is_invited(h):
    slack, clock = h.slack, h.clock
    build(h)
    clock.set(MON_0900_NEW_YORK)
    slack.fail_next("chat.postMessage", error="not_in_channel")
    tick(h.rt)
    assert [c.ok for c in reports(slack)] == [False]
    clock.advance(minutes=1)
    tick(h.rt)
    assert [c.ok for c in reports(slack)] == [False, True]
    clock.advance(minutes=1)
    tick(h.rt)
    assert len(reports(slack, include_failed=False)) == 1
    assert_posted_once_after_failures(h)


def assert_posted_once_after_failures(h) -> None:
    (post,) = delivered(h.slack, CHANNEL)
    assert "Lead hand-off report" in body(post)
    assert len(top_level_messages(h.slack, CHANNEL)) == 1
    (row,) = stored_rows(h)
    assert row.ts == post.response["ts"]


@pytest.mark.parametrize("fault", ALL)
def test_the_report_when_slack_fails_its_post(h, fault):
    """Rate limited, a 500, a dropped connection, an answer slower than the client's
    timeout: the report reaches the channel once, and its ts is recorded."""
    slack, clock = h.slack, h.clock
    build(h)
    clock.set(MON_0900_NEW_YORK)
    inject(slack, fault)  # nothing else is due on this Monday: the first post is the report
    tick(h.rt)

    check_the_fault_happened(slack, fault, CHANNEL)
    if fault in ABSORBED:
        assert delivered(slack, CHANNEL) == []
        wait_out_retry_after(h, CHANNEL)
    else:
        assert len(delivered(slack, CHANNEL)) == (fault == "slow")
        with session_scope(h.rt.session_factory) as s:
            assert s.scalars(select(LeadReport.ts)).one() is None  # queued, not recorded
        tried = len(tries_to(slack, CHANNEL))
        clock.advance(minutes=10)
        tick(h.another_process())  # a restarted process picks it up
        clock.advance(minutes=1)
        tick(h.rt)
        assert len(tries_to(slack, CHANNEL)) > tried or fault == "slow"
    assert statuses(slack, CHANNEL) == EVERY_TRY[fault]
    assert_posted_once_after_failures(h)
    assert slack.server_errors == []


# --- the command --------------------------------------------------------------------------


def test_cli_json_text_and_bad_weeks(cli_env, session_factory):
    with session_scope(session_factory) as s:
        build_week(s)
    out = closeloop(cli_env, "leads", "report", "--week", "2026-W49", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["week"], data["timezone"], data["handed_over"]) == ("2026-W49", "UTC", 28)
    assert data["flagged_sources"] == [WEBINAR]
    assert {g["name"]: g["rejected"] for g in data["by_source"]}[WEBINAR] == 5
    assert data["sla"]["median_hours_to_first_response"] == 4.5
    assert data["definition"] is None

    out = closeloop(cli_env, "leads", "report", "--week", "2026-W49")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Lead hand-off report — week of Mon 30 Nov 2026 (2026-W49)")
    assert "(!) Webinar: 45% (5 of 11) of its rated leads rejected" in out.stdout

    out = closeloop(cli_env, "leads", "report")  # last week, whatever today is
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Lead hand-off report — week of ")

    for bad in ("2026-W54", "2026-49", "next"):
        out = closeloop(cli_env, "leads", "report", "--week", bad)
        assert out.returncode == 2, (bad, out.stdout, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("closeloop: "), out.stderr
        assert "not an ISO week like 2026-W49" in out.stderr
        assert "Traceback" not in out.stderr and out.stdout == ""
    for usage in (["leads"], ["leads", "report", "--json", "--post"], ["leads", "nothing"]):
        out = closeloop(cli_env, *usage)
        assert out.returncode == 2, (usage, out.stdout, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("closeloop: "), out.stderr


def test_cli_help_has_examples(cli_env):
    out = closeloop(cli_env, "leads", "report", "--help")
    assert out.returncode == 0
    assert "closeloop leads report --week 2026-W49 --json" in out.stdout
    out = closeloop(cli_env, "leads", "--help")
    assert out.returncode == 0 and "report" in out.stdout


def test_cli_printing_needs_only_the_database(cli_env, session_factory):
    env = {k: v for k, v in cli_env.items() if not k.startswith(("SLACK_", "FEEDBACK_"))}
    out = closeloop(env, "leads", "report", "--week", "2026-W49")
    assert out.returncode == 0, out.stderr
    assert "No leads were handed over in the week of Mon 30 Nov 2026" in out.stdout


def test_cli_post_posts_once_to_marketing_s_channel(cli_env, session_factory, fake_slack):
    with session_scope(session_factory) as s:
        build_week(s)
    first = closeloop(cli_env, "leads", "report", "--week", "2026-W49", "--post")
    assert first.returncode == 0, first.stderr
    assert "posted the 2026-W49 lead report to CMKTG" in first.stdout  # FEEDBACK_CHANNEL's
    again = closeloop(cli_env, "leads", "report", "--week", "2026-W49", "--post")
    assert again.returncode == 0, again.stderr
    assert "already posted" in again.stdout
    posts = [
        c
        for c in fake_slack.calls_to("chat.postMessage", include_failed=True)
        if c.params["channel"] == "CMKTG"
    ]
    assert len(posts) == 1 and posts[0].ok
    assert "<@" not in body(posts[0]) and "<!" not in body(posts[0])
    with session_scope(session_factory) as s:
        (row,) = s.scalars(select(LeadReport))
        assert row.ts == posts[0].response["ts"]
        (message,) = s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "lead_report"))
        assert message.key == "lead-report:2026-11-30"


def test_a_long_report_is_one_message_slack_accepts(h):
    """Many sources, campaigns and reps with long names: the fake Slack checks Block Kit's
    limits (50 blocks, 3,000 characters a section) as Slack does."""
    with session_scope(h.rt.session_factory) as s:
        for i in range(90):
            add_lead(
                s,
                f"Source {i} " + "&" * 150,
                status="rejected",
                hours=1,
                reason="Bad data",
                campaign=f"Campaign {i} " + "<" * 150,
                owner=f"U{i:05d}",
            )
    h.clock.set(MON_0900_NEW_YORK)
    tick(h.rt)
    (post,) = reports(h.slack)
    assert post.ok, post.error
    assert len(post.params["blocks"]) <= 50
    assert "… and 65 more" in body(post)
