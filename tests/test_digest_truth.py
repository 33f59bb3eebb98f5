"""The digest tells the truth, kindly (issue 13): a week still open is nobody's miss; people
are named in the channel without a ping and told of their own misses privately, once; every
rate shows its count (the count alone below DIGEST_MIN_SAMPLE); amounts carry CURRENCY; the
chart is sorted by losses, labelled, and shows a name with ``$`` as typed; a chart that
cannot be drawn is given up and the post stops promising it; a month the calendar cannot
hold is a one-line error.

Driven the way Slack and an operator drive it: the scheduler's tick against the fake Slack,
and the ``closeloop`` command.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from bot import chart
from bot.blocks import winloss as wl_blocks
from bot.blocks.digest import amount, ratio
from bot.db import session_scope
from bot.jobs import digest as digest_jobs
from bot.models import Member, OutboxMessage, Prompt
from bot.services.digest import Month
from tests.conftest import closeloop
from tests.harness import tick
from tests.test_digest import (
    NOV_2_0900_NEW_YORK,
    add_deal,
    add_entry,
    add_prompt,
    all_text,
    build_data,
    build_posting_data,
    digest_posts,
)


@pytest.fixture
def settings_overrides():
    return {"DIGEST_TIMEZONE": "America/New_York"}


def add_rep(s, user_id: str, name: str) -> None:
    """A rep as the roster stores one (name as Slack gave it); not in the sales group, so
    the tick sends them no prompt of its own."""
    s.add(Member(user_id=user_id, name=name, tz="America/New_York", is_sales=False))


def october_prompts(s) -> None:
    """UCAT missed the week of 19 October (closed on Friday 30 October); UDAN's prompt for
    the week of 26 October is unanswered but that week closes on Friday 6 November, after
    the digest of Monday 2 November: not missed."""
    add_rep(s, "UCAT", "Cat Lee")
    add_rep(s, "UDAN", "Dan <Ops>")
    add_prompt(s, "UCAT", date(2026, 10, 19), "missed")
    add_prompt(s, "UDAN", date(2026, 10, 19), "answered")
    add_prompt(s, "UCAT", date(2026, 10, 26), "answered")
    still_open = add_prompt(s, "UDAN", date(2026, 10, 26), "sent")
    # as the scheduler sets it: the next prompt time after the reminder
    still_open.closes_at = datetime(2026, 11, 6, 21, 0, tzinfo=UTC)


def dms_to(slack, user: str, containing: str) -> list:
    return [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.params["channel"] == user and containing in c.params.get("text", "")
    ]


def test_open_weeks_are_not_missed_and_reps_are_named_without_a_ping(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    slack.add_user("UCAT", tz="America/New_York", name="cat")
    slack.add_user("UDAN", tz="America/New_York", name="dan")
    build_posting_data(h.rt.session_factory)
    with session_scope(h.rt.session_factory) as s:
        october_prompts(s)
    clock.set(NOV_2_0900_NEW_YORK)
    tick(h.rt)

    (post,) = digest_posts(slack)
    body = all_text(post.params)
    lines = [
        line
        for block in post.params["blocks"]
        if block["type"] == "section"
        for line in block["text"]["text"].split("\n")
    ]
    # UDAN's unanswered week is still open: not missed
    assert "Weeks missed (each rep is told privately): Cat Lee (1)" in lines
    assert "1 prompt(s) for a week still open are not counted yet." in body
    # the closed weeks only: 10-19 both prompted (one answered), 10-26 UCAT's answer alone
    assert "Responses per week: 10-19 1 of 2, 10-26 1 of 1" in body
    assert "<@" not in body  # nobody pinged: not the reps, not the deal owners (UANA, UBEN)

    # the rep who missed a week is told, privately, once, just after the digest is out
    clock.advance(seconds=11)
    tick(h.rt)
    (note,) = dms_to(slack, "UCAT", "digest")
    assert "week of Oct 19" in note.params["text"] and "<#CDIGEST>" in note.params["text"]
    assert dms_to(slack, "UDAN", "digest") == []
    clock.advance(minutes=11)
    tick(h.rt)
    tick(h.another_process())
    assert len(dms_to(slack, "UCAT", "digest")) == 1
    assert len(digest_posts(slack)) == 1


def test_a_name_that_looks_like_markup_is_shown_not_obeyed(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    slack.add_user("UDAN", tz="America/New_York", name="dan")
    with session_scope(h.rt.session_factory) as s:
        add_rep(s, "UDAN", "Dan <!channel>")
        add_prompt(s, "UDAN", date(2026, 10, 12), "missed")
    clock.set(NOV_2_0900_NEW_YORK)
    tick(h.rt)
    (post,) = digest_posts(slack)
    body = all_text(post.params)
    assert "Dan &lt;!channel&gt; (1)" in body and "<!channel>" not in body


def test_the_private_note_waits_for_the_digest(harness):
    """The note points to the digest in the channel: while Slack refuses the digest (the bot
    not invited yet), the note waits; it goes out once the digest is posted."""
    h, slack, clock = harness, harness.slack, harness.clock
    slack.add_user("UCAT", tz="America/New_York", name="cat")
    with session_scope(h.rt.session_factory) as s:
        add_rep(s, "UCAT", "Cat Lee")
        add_prompt(s, "UCAT", date(2026, 10, 12), "missed")
    clock.set(NOV_2_0900_NEW_YORK)
    slack.fail_next("chat.postMessage", error="not_in_channel")
    tick(h.rt)
    assert [c.ok for c in digest_posts(slack)] == [False]
    assert dms_to(slack, "UCAT", "digest") == []
    clock.advance(minutes=1)
    tick(h.rt)
    assert [c.ok for c in digest_posts(slack)] == [False, True]
    clock.advance(seconds=11)
    tick(h.rt)
    (note,) = dms_to(slack, "UCAT", "digest")
    posted = digest_posts(slack)[1]
    assert slack.calls.index(note) > slack.calls.index(posted)  # after the digest, not before


def test_a_late_answer_cancels_the_private_note(harness):
    """The note is rendered when it is sent: a week no longer missed is not reported."""
    h, slack, clock = harness, harness.slack, harness.clock
    slack.add_user("UCAT", tz="America/New_York", name="cat")
    with session_scope(h.rt.session_factory) as s:
        add_rep(s, "UCAT", "Cat Lee")
        add_prompt(s, "UCAT", date(2026, 10, 12), "missed")
    clock.set(NOV_2_0900_NEW_YORK)
    h.rt.outbox.stop()  # queued, not sent yet
    assert digest_jobs.queue(h.rt, Month(2026, 10))
    with session_scope(h.rt.session_factory) as s:  # the answer recorded in the meantime
        s.scalars(select(Prompt)).one().status = "answered"
    h.another_process().outbox.drain()
    assert len(digest_posts(slack)) == 1
    clock.advance(seconds=11)
    h.another_process().outbox.drain()
    assert dms_to(slack, "UCAT", "digest") == []
    with session_scope(h.rt.session_factory) as s:
        note = s.scalars(
            select(OutboxMessage).where(OutboxMessage.key == "digest-missed:2026-10:UCAT")
        ).one()
        assert note.state == "dropped"  # queued with the digest, given up when sent


def test_overdue_escalation_names_the_owner_without_a_ping():
    text, blocks = wl_blocks.overdue_escalation(
        deal_pk=1,
        deal_name="Acme",
        owner_id="UBEN",
        owner_name="Ben <Ops>",
        owner_email=None,
        outcome="lost",
        hours=24,
    )
    assert "Owner: Ben &lt;Ops&gt;." in text and "<@" not in json.dumps(blocks)


# --- the chart ----------------------------------------------------------------------------


def test_a_competitor_with_dollars_gets_its_chart(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    build_posting_data(h.rt.session_factory)
    with session_scope(h.rt.session_factory) as s:
        d = add_deal(s, "Dollar deal", "lost", "2026-10-21 15:00", owner="UBEN")
        add_entry(
            s,
            d,
            reason="cheaper",
            category="Price",
            competitor="Rival $a_b_c$ Inc",
            logged="2026-10-21 16:00",
        )
    clock.set(NOV_2_0900_NEW_YORK)
    tick(h.rt)
    (post,) = digest_posts(slack)
    assert "Rival $a_b_c$ Inc: 1 deal(s) — Won 0 · Lost 1" in all_text(post.params)
    assert len(slack.files) == 1
    (file,) = slack.files.values()
    assert file["content"].startswith(b"\x89PNG") and file["thread_ts"] == post.response["ts"]


def chart_texts(losses: dict[str, int]) -> list[str]:
    """The texts of the chart as drawn (SVG with text kept as text)."""
    import matplotlib

    fig = chart.figure(month="2026-10", history=[("2026-10", 0.5, 4)], losses=losses)
    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(out, format="svg")
    return [
        t.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        for t in re.findall(r"<text[^>]*>([^<]*)</text>", out.getvalue())
    ]


def test_chart_shows_names_as_typed_sorted_by_losses_with_values():
    texts = chart_texts(
        {"Solo $ sign": 1, "Rival $a_b_c$ Inc": 3, "Beta": 5, r"back\slash $x^2$": 2}
    )
    names = [
        t for t in texts if t in {"Solo $ sign", "Rival $a_b_c$ Inc", "Beta", r"back\slash $x^2$"}
    ]
    # drawn bottom-up: the fewest losses first, the most at the top
    assert names == ["Solo $ sign", r"back\slash $x^2$", "Rival $a_b_c$ Inc", "Beta"]
    after_names = texts[texts.index("Beta") + 1 :]
    assert after_names[:4] == ["1", "2", "3", "5"]  # each bar labelled with its losses
    assert "Lost (deals)" in texts
    assert "Losses by competitor, 2026-10" in texts


def test_a_chart_that_cannot_be_drawn_is_given_up_and_no_longer_promised(harness, monkeypatch):
    h, slack, clock = harness, harness.slack, harness.clock
    build_posting_data(h.rt.session_factory)

    def broken(**_kwargs):
        raise ValueError("matplotlib cannot draw this")

    monkeypatch.setattr(chart, "render", broken)
    clock.set(NOV_2_0900_NEW_YORK)
    tick(h.rt)
    (post,) = digest_posts(slack)
    assert "the chart is in the thread" in all_text(post.params)
    clock.advance(minutes=1)
    tick(h.rt)
    (edit,) = [
        c
        for c in slack.calls_to("chat.update")
        if c.params["channel"] == "CDIGEST" and c.params["ts"] == post.response["ts"]
    ]
    assert "the chart could not be drawn this month" in all_text(edit.params)
    assert "the chart is in the thread" not in all_text(edit.params)
    assert "Won *3* · Lost *2*" in all_text(edit.params)  # the figures are kept
    for _ in range(3):  # not tried again every ten minutes
        clock.advance(minutes=11)
        tick(h.rt)
    assert slack.calls_to("files.getUploadURLExternal", include_failed=True) == []
    assert len(slack.calls_to("chat.update")) == 1
    with session_scope(h.rt.session_factory) as s:
        states = dict(s.execute(select(OutboxMessage.kind, OutboxMessage.state)).all())
    assert states["digest_chart"] == "dropped"


# --- the CLI ------------------------------------------------------------------------------


def test_months_the_calendar_cannot_hold_are_one_line_errors(cli_env):
    for bad in ("9999-12", "0000-01", "10000-01", "2026-13"):
        out = closeloop(cli_env, "digest", "--month", bad)
        assert out.returncode == 2, (bad, out.stdout, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("closeloop: "), out.stderr
        assert "YYYY-MM" in out.stderr and out.stdout == ""
    out = closeloop(cli_env, "digest", "--month", "9999-11", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["month"] == "9999-11"


def test_min_sample_and_currency_settings(cli_env, session_factory):
    with session_scope(session_factory) as s:
        build_data(s)
    out = closeloop(
        {**cli_env, "DIGEST_MIN_SAMPLE": "11", "CURRENCY": "EUR"}, "digest", "--month", "2026-10"
    )
    assert out.returncode == 0, out.stderr
    assert "Win rate 2 of 10\n" in out.stdout  # 10 decided deals, under 11: no percentage
    assert "Closed deals with a win/loss entry: 91% (10 of 12)." not in out.stdout
    assert "Closed deals with a win/loss entry: 83% (10 of 12)." in out.stdout  # 12 >= 11
    assert "Amount won 3,500.50 EUR · lost 6,000.25 EUR" in out.stdout
    for bad in ({"DIGEST_MIN_SAMPLE": "0"}, {"DIGEST_MIN_SAMPLE": "five"}, {"CURRENCY": "$"}):
        out = closeloop({**cli_env, **bad}, "digest", "--month", "2026-10")
        (name,) = bad
        assert out.returncode != 0 and name in out.stderr, out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_amounts_have_separators_and_currency():
    assert amount("12500.00", "USD") == "$12,500"
    assert amount("1234567.5", "USD") == "$1,234,567.50"
    assert amount("12500", "EUR") == "12,500 EUR"
    assert amount(None, "GBP") == "0 GBP"
    assert ratio(3, 7, 5) == "43% (3 of 7)"
    assert ratio(3, 4, 5) == "3 of 4"
    assert ratio(0, 0, 5) == "—"
