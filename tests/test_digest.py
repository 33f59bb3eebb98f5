"""The monthly digest: figures against a data set whose answers are known by construction,
the CLI (text, JSON, bad months), and posting through the fake Slack exactly once with its
chart in the thread.

Every expected number below was worked out by hand from the rows inserted; none is
recomputed with the code under test.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.blocks import digest as digest_blocks
from bot.db import patient, patiently, session_scope
from bot.jobs import digest as digest_jobs
from bot.models import Deal, Digest, FeedbackAnswer, LoopPost, Prompt, WinLossEntry
from bot.runtime import Runtime
from bot.services import competitors
from bot.services.digest import Month, compute, first_working_day, win_rate_history
from bot.services.errors import DomainError
from tests.conftest import closeloop
from tests.harness import tick

UTC_ZONE = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")
OCTOBER = Month(2026, 10)
# When the October digest is computed: Monday 2 November 2026, 14:00 UTC (09:00 in New York).
NOV_2_0900_NEW_YORK = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)


def all_text(message: dict) -> str:
    """A message's blocks (as JSON, non-ASCII kept) and its text."""
    return json.dumps(message.get("blocks"), ensure_ascii=False) + message.get("text", "")


def at(text: str) -> datetime:
    """``"2026-10-06 09:00"`` as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- building rows ------------------------------------------------------------------------


def add_deal(s, name, outcome, closed, *, owner="UANA", email=None, amount=None) -> Deal:
    """A closed deal, already past its deadline and reported, so no tick nudges about it."""
    closed_at = at(closed) if isinstance(closed, str) else closed
    deal = Deal(
        name=name,
        outcome=outcome,
        closed_at=closed_at,
        owner_user_id=owner,
        owner_email=email,
        amount=None if amount is None else Decimal(amount),
        origin="import",
        received_at=closed_at,
        deadline_at=closed_at + timedelta(hours=24),
        overdue_at=closed_at + timedelta(hours=24),
    )
    s.add(deal)
    s.flush()
    return deal


def add_entry(
    s, deal, *, reason, category, competitor=None, on_time=True, logged, insight=None
) -> WinLossEntry:
    comp = competitors.get_or_create(s, competitor) if competitor else None
    entry = WinLossEntry(
        deal_id=deal.id,
        outcome=deal.outcome,
        reason=reason,
        reason_category=category,
        competitor_id=comp.id if comp else None,
        insight=insight,
        logged_at=at(logged),
        on_time=on_time,
        author_user_id=deal.owner_user_id,
    )
    s.add(entry)
    s.flush()
    return entry


def add_prompt(s, user, week: date, status) -> Prompt:
    monday = datetime.combine(week, datetime.min.time(), tzinfo=UTC)
    prompt = Prompt(
        user_id=user,
        week_start=week,
        tz="UTC",
        status=status,
        claimed_at=monday + timedelta(days=4, hours=16),
        sent_at=None if status == "pending" else monday + timedelta(days=4, hours=16),
        remind_at=monday + timedelta(days=7, hours=10),
        closes_at=monday + timedelta(days=7),
    )
    s.add(prompt)
    s.flush()
    return prompt


def add_answer(s, prompt, *, worked, fell_flat, insight, updated) -> FeedbackAnswer:
    answer = FeedbackAnswer(
        prompt_id=prompt.id,
        user_id=prompt.user_id,
        worked=worked,
        fell_flat=fell_flat,
        insight=insight,
        source="modal",
        created_at=at(updated),
        updated_at=at(updated),
    )
    s.add(answer)
    s.flush()
    return answer


_ts = iter(range(1, 10_000))


def add_post(s, kind, subject_id, author, *, created, posted="same", acked=None, ts="auto"):
    """A loop post; ``posted="same"`` posts it when created, ``ts=None`` never posted it."""
    created_at = at(created)
    post = LoopPost(
        kind=kind,
        subject_id=subject_id,
        author_user_id=author,
        channel="CMKTG",
        ts=f"1790000000.{next(_ts):06d}" if ts == "auto" else ts,
        created_at=created_at,
        posted_at=created_at if posted == "same" else (at(posted) if posted else None),
        first_ack_at=at(acked) if acked else None,
    )
    s.add(post)
    s.flush()
    return post


def build_data(s) -> dict:
    """September, October and one November deal (UTC), feedback weeks and loop posts.

    October 2026 in UTC, by construction:
      deals: 2 won (1000.00 + 2500.50), 8 lost (4000 + 1500 + 500.25 + five without amount),
        2 no decision; 10 of the 12 have an entry (W2 and N2 have none).
      losses by category: Price 4, Features 2, Timing 2 (Features/Timing tie: name order).
      competitors: Alpha W1 L1 L4 (3 deals, 1 won, 2 lost), Bravo L2 L5 N1 (3, 0, 2),
        Charlie L7 (1, 0, 1); September had Alpha 3 and Bravo 1, so Bravo +2, Charlie +1.
      on time: UANA 5/5, UBEN 2/4, carl@example.com 0/1 -> 7/10.
    """
    rows: dict = {}
    # --- September: 3 won, 1 lost (win rate 0.75); Alpha 3 deals, Bravo 1 ---
    for name, outcome, closed, owner, comp in (
        ("S1", "won", "2026-09-10 12:00", "UANA", "Alpha"),
        ("S2", "won", "2026-09-12 12:00", "UBEN", "Alpha"),
        ("S3", "lost", "2026-09-14 12:00", "UANA", "Alpha"),
        ("S4", "won", "2026-09-30 23:59:59", "UBEN", "Bravo"),  # last second of September
    ):
        d = add_deal(s, name, outcome, closed, owner=owner)
        add_entry(s, d, reason=f"{name} reason", category="Price", competitor=comp, logged=closed)

    # --- October ---
    # Bravo is created before Alpha, so an order by id would put Bravo first; the documented
    # order is by deals (descending), then name.
    w1 = add_deal(s, "Acme", "won", "2026-10-01 00:00", owner="UANA", amount="1000.00")
    add_deal(s, "Bolt", "won", "2026-10-20 12:00", owner="UBEN", amount="2500.50")  # no entry
    l2 = add_deal(s, "Delta Co", "lost", "2026-10-02 12:00", owner="UBEN", amount="1500")
    rows["L2"] = add_entry(
        s,
        l2,
        reason="Bravo was half the price.",
        category="Price",
        competitor="Bravo",
        on_time=False,
        logged="2026-10-03 09:00",
        insight="Publish a price comparison",
    )
    add_entry(
        s,
        w1,
        reason="Onboarding was fast",
        category="Product",
        competitor="Alpha",
        logged="2026-10-01 10:00",
    )
    l1 = add_deal(s, "Cobalt", "lost", "2026-10-05 12:00", owner="UANA", amount="4000")
    rows["L1"] = add_entry(
        s,
        l1,
        reason="Forty percent above\n  what they pay now.",
        category="Price",
        competitor="Alpha",
        logged="2026-10-06 09:00",
        insight="Lead with the ROI sheet",
    )
    l3 = add_deal(s, "Ember", "lost", "2026-10-08 12:00", owner="UANA")
    add_entry(s, l3, reason="No budget left this year", category="Price", logged="2026-10-09 09:00")
    l4 = add_deal(s, "Fjord", "lost", "2026-10-03 12:00", owner="UBEN", amount="500.25")
    rows["L4"] = add_entry(
        s,
        l4,
        reason="Alpha threw in a free year — “unbeatable”, they said",
        category="Price",
        competitor="Alpha",
        logged="2026-10-04 09:00",
        insight="Counter free-year offers",
    )
    l6 = add_deal(s, "Harbor", "lost", "2026-10-12 12:00", owner="UANA")
    add_entry(
        s, l6, reason="Reorg put the decision on hold", category="Timing", logged="2026-10-13 09:00"
    )
    l5 = add_deal(s, "Gale", "lost", "2026-10-11 12:00", owner=None, email="carl@example.com")
    add_entry(
        s,
        l5,
        reason="They froze all projects until Q2",
        category="Timing",
        competitor="Bravo",
        on_time=False,
        logged="2026-10-12 09:00",
    )
    l7 = add_deal(s, "Iris", "lost", "2026-10-13 12:00", owner="UBEN")
    add_entry(
        s,
        l7,
        reason="Charlie has the SSO they need",
        category="Features",
        competitor="Charlie",
        on_time=False,
        logged="2026-10-14 09:00",
    )
    # closed in the last second of October, logged in November: still October's
    l8 = add_deal(s, "Jade", "lost", "2026-10-31 23:59:59", owner="UANA")
    add_entry(s, l8, reason="Missing an audit log", category="Features", logged="2026-11-01 10:00")
    n1 = add_deal(s, "Kite", "no_decision", "2026-10-15 12:00", owner="UBEN")
    # a no-decision entry with a category: not a loss reason
    add_entry(
        s,
        n1,
        reason="Went quiet",
        category="Timing",
        competitor="Bravo",
        logged="2026-10-16 09:00",
    )
    add_deal(s, "Lumen", "no_decision", "2026-10-16 12:00", owner="UANA")  # no entry

    # --- November: one lost deal at the first instant of November (UTC) ---
    x1 = add_deal(s, "November deal", "lost", "2026-11-01 00:00", owner="UANA")
    add_entry(
        s,
        x1,
        reason="November loss",
        category="Price",
        competitor="Charlie",
        logged="2026-11-01 09:00",
    )

    # --- weekly feedback: weeks starting in October (5, 12, 19, 26) ---
    weeks = {
        date(2026, 9, 28): {"UANA": "missed", "UBEN": "answered"},  # September's week
        date(2026, 10, 5): {
            "UANA": "answered",
            "UBEN": "skipped",
            "UCAT": "sent",
            "UDAN": "missed",
        },
        date(2026, 10, 12): {
            "UANA": "answered",
            "UBEN": "answered",
            "UCAT": "missed",
            "UDAN": "pending",
        },
        date(2026, 10, 19): {"UANA": "answered", "UBEN": "answered"},
        date(2026, 10, 26): {
            "UANA": "skipped",
            "UBEN": "missed",
            "UCAT": "answered",
            "UDAN": "answered",
        },
    }
    prompts = {
        (week, user): add_prompt(s, user, week, status)
        for week, statuses in weeks.items()
        for user, status in statuses.items()
    }

    def answer(week, user, n, fell_flat, updated):
        return add_answer(
            s,
            prompts[(date(2026, *week), user)],
            worked=f"worked {n}",
            fell_flat=fell_flat,
            insight=f"insight {n}",
            updated=updated,
        )

    a_sep = answer((9, 28), "UBEN", 0, "Integration gaps; integration gaps", "2026-10-02 09:00")
    a1 = answer((10, 5), "UANA", 1, "The price increase scared them.", "2026-10-09 12:00")
    answer((10, 12), "UANA", 2, "Another price increase complaint", "2026-10-16 09:00")
    a3 = answer((10, 12), "UBEN", 3, "Security review took too long", "2026-10-16 10:00")
    a4 = answer(
        (10, 19), "UANA", 4, "Security review again, and the price increase", "2026-10-23 09:00"
    )
    a5 = answer((10, 19), "UBEN", 5, "Nothing fell flat", "2026-10-23 12:00")
    # the same updated_at: the later row (higher id) comes first
    a6 = answer((10, 26), "UCAT", 6, "Demo crashed", "2026-10-30 09:00")
    a7 = answer((10, 26), "UDAN", 7, "Integration gaps with Salesforce", "2026-10-30 09:00")

    # --- loop posts created in October (UTC) ---
    add_post(
        s, "winloss", rows["L2"].id, "UBEN", created="2026-10-03 09:00", acked="2026-10-04 15:00"
    )  # 30 h
    rows["P4"] = add_post(s, "winloss", rows["L4"].id, "UBEN", created="2026-10-04 10:00")
    add_post(
        s,
        "winloss",
        rows["L1"].id,
        "UANA",
        created="2026-10-06 09:00",
        posted=None,
        acked="2026-10-06 19:00",
    )  # 10 h from creation (never recorded as posted)
    add_post(
        s, "feedback", a1.id, "UANA", created="2026-10-09 15:00", acked="2026-10-09 17:00"
    )  # 2 h
    add_post(
        s,
        "feedback",
        a3.id,
        "UBEN",
        created="2026-10-16 09:00",
        posted="2026-10-16 09:30",
        acked="2026-10-16 14:30",
    )  # 5 h from posting
    add_post(s, "feedback", a4.id, "UANA", created="2026-10-23 10:00", ts=None)  # never posted
    # open more than 7 days at NOV_2 14:00 (created before 26 Oct 14:00)
    rows["P9"] = add_post(s, "feedback", a5.id, "UBEN", created="2026-10-26 13:00")
    add_post(s, "feedback", a6.id, "UCAT", created="2026-10-30 12:00")  # open under 7 days
    add_post(s, "feedback", a7.id, "UDAN", created="2026-10-31 20:00")  # open under 7 days
    add_post(
        s, "feedback", a_sep.id, "UBEN", created="2026-09-30 23:00", acked="2026-10-01 01:00"
    )  # September's
    s.flush()
    return rows


def figures(s, month=OCTOBER, tz=UTC_ZONE, now=NOV_2_0900_NEW_YORK) -> dict:
    return compute(s, month=month, tz=tz, now=now)


# --- Month and the calendar ---------------------------------------------------------------


def test_month_parse_bounds_and_first_working_day():
    assert Month.parse("2026-10") == OCTOBER
    assert Month.parse("2026-1") == Month(2026, 1)
    for bad in ("2026-13", "2026-00", "oct", "", "2026/10", "10-2026"):
        with pytest.raises(DomainError) as err:
            Month.parse(bad)
        assert "\n" not in str(err.value) and "YYYY-MM" in str(err.value)
    assert str(Month(2026, 1).previous()) == "2025-12"
    assert str(Month(2026, 12).next()) == "2027-01"
    assert OCTOBER.bounds(UTC_ZONE) == (at("2026-10-01 00:00"), at("2026-11-01 00:00"))
    # New York: EDT (-4) on 1 October and still at midnight on 1 November; EST (-5) on 1 December
    assert OCTOBER.bounds(NEW_YORK) == (at("2026-10-01 04:00"), at("2026-11-01 04:00"))
    assert Month(2026, 11).bounds(NEW_YORK) == (at("2026-11-01 04:00"), at("2026-12-01 05:00"))
    assert Month.containing(at("2026-11-01 03:00"), NEW_YORK) == OCTOBER
    assert Month.containing(at("2026-11-01 03:00"), UTC_ZONE) == Month(2026, 11)
    assert first_working_day(OCTOBER) == date(2026, 10, 1)  # a Thursday
    assert first_working_day(Month(2026, 11)) == date(2026, 11, 2)  # 1st is a Sunday
    assert first_working_day(Month(2026, 8)) == date(2026, 8, 3)  # 1st is a Saturday


# --- the figures --------------------------------------------------------------------------


def test_an_empty_month_has_no_data_and_says_so(db):
    f = figures(db, month=Month(2026, 3))
    assert f["has_data"] is False
    assert (f["wins"], f["losses"], f["no_decisions"], f["closed_deals"]) == (0, 0, 0, 0)
    for key in (
        "win_rate",
        "win_rate_change",
        "amount_won",
        "amount_lost",
        "coverage",
        "feedback_response_rate",
        "acknowledged_rate",
        "median_hours_to_ack",
        "on_time_rate",
    ):
        assert f[key] is None, key
    assert f["loss_reasons_by_category"] == {} and f["losses_by_competitor"] == {}
    assert f["competitors"] == {} and f["open_loops"] == [] and f["warnings"] == []
    assert f["small_sample"] is False
    text = digest_blocks.digest_text(f)
    assert "No closed deals, weekly feedback or loop posts in March 2026." in text
    message_text, blocks = digest_blocks.digest_message(f)
    assert message_text == "No closed deals, weekly feedback or loop posts in March 2026."
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Closeloop digest — March 2026"},
    }
    assert "No closed deals" in blocks[1]["text"]["text"]


def test_a_month_with_one_lost_deal_warns_and_has_win_rate_zero(db):
    build_data(db)
    f = figures(db, month=Month(2026, 11), now=at("2026-12-01 14:00"))
    assert (f["wins"], f["losses"], f["no_decisions"]) == (0, 1, 0)
    assert f["win_rate"] == 0.0
    assert f["win_rate_change"] == pytest.approx(-0.2)  # October was 2 / 10
    assert f["small_sample"] is True
    assert f["warnings"] == ["Only 1 closed deal(s) this month: treat rates as anecdotes."]
    assert f["losses_by_competitor"] == {"Charlie": 1}
    assert f["loss_quotes"] == {"Price": [{"quote": "November loss", "deal": "November deal"}]}
    text = digest_blocks.digest_text(f)
    assert "! Only 1 closed deal(s) this month" in text
    # one decided deal, under DIGEST_MIN_SAMPLE (5): counts, no percentage, no change
    assert "Win rate 0 of 1\n" in text
    assert "pts vs" not in text
    assert "UANA: 1 of 1" in text
    _, blocks = digest_blocks.digest_message(f)
    assert blocks[1]["type"] == "context" and "Only 1 closed deal(s)" in all_text(
        {"blocks": [blocks[1]]}
    )


def test_a_month_with_one_won_deal_has_win_rate_one_and_no_change(db):
    d = add_deal(db, "Solo", "won", "2026-05-20 12:00", amount="99.9")
    add_entry(db, d, reason="Great fit", category="Product", logged="2026-05-20 13:00")
    f = figures(db, month=Month(2026, 5), now=at("2026-06-01 09:00"))
    assert (f["wins"], f["losses"], f["no_decisions"]) == (1, 0, 0)
    assert f["win_rate"] == 1.0
    assert f["win_rate_change"] is None  # April had no decided deal
    assert f["amount_won"] == "99.90" and f["amount_lost"] is None
    assert f["coverage"] == 1.0 and f["on_time_rate"] == 1.0
    assert f["warnings"] == ["Only 1 closed deal(s) this month: treat rates as anecdotes."]
    assert f["loss_reasons_by_category"] == {} and f["has_data"] is True


def test_win_loss_figures_for_october(db):
    build_data(db)
    f = figures(db)
    assert f["month"] == "2026-10" and f["timezone"] == "UTC"
    assert (f["wins"], f["losses"], f["no_decisions"]) == (2, 8, 2)
    assert f["win_rate"] == pytest.approx(0.2)  # 2 / (2 + 8); no decisions apart
    assert f["amount_won"] == "3500.50"
    assert f["amount_lost"] == "6000.25"
    assert (f["closed_deals"], f["deals_with_entry"]) == (12, 10)
    assert f["coverage"] == pytest.approx(10 / 12)
    assert f["small_sample"] is False and f["warnings"] == []
    assert f["has_data"] is True
    prev = f["previous"]
    assert prev["month"] == "2026-09"
    assert (prev["wins"], prev["losses"], prev["no_decisions"]) == (3, 1, 0)
    assert prev["win_rate"] == pytest.approx(0.75)
    assert f["win_rate_change"] == pytest.approx(-0.55)


def test_loss_reasons_ties_and_verbatim_quotes(db):
    build_data(db)
    f = figures(db)
    # by count, then by category name: Features before Timing (inserted Timing first)
    assert list(f["loss_reasons_by_category"].items()) == [
        ("Price", 4),
        ("Features", 2),
        ("Timing", 2),
    ]
    # at most three, the earliest logged first, exactly as typed
    assert f["loss_quotes"]["Price"] == [
        {"quote": "Bravo was half the price.", "deal": "Delta Co"},
        {"quote": "Alpha threw in a free year — “unbeatable”, they said", "deal": "Fjord"},
        {"quote": "Forty percent above\n  what they pay now.", "deal": "Cobalt"},
    ]
    assert f["loss_quotes"]["Features"] == [
        {"quote": "Charlie has the SSO they need", "deal": "Iris"},
        {"quote": "Missing an audit log", "deal": "Jade"},
    ]
    assert f["loss_quotes"]["Timing"] == [
        {"quote": "They froze all projects until Q2", "deal": "Gale"},
        {"quote": "Reorg put the decision on hold", "deal": "Harbor"},
    ]
    text = digest_blocks.digest_text(f)
    assert "“Forty percent above what they pay now.”" in text  # whitespace folded for display
    assert "No budget left this year" not in text  # the fourth Price quote


def test_competitors_ties_and_rising(db):
    build_data(db)
    f = figures(db)
    assert list(f["competitors"].items()) == [
        ("Alpha", {"deals": 3, "wins": 1, "losses": 2}),
        ("Bravo", {"deals": 3, "wins": 0, "losses": 2}),
        ("Charlie", {"deals": 1, "wins": 0, "losses": 1}),
    ]
    assert list(f["losses_by_competitor"].items()) == [("Alpha", 2), ("Bravo", 2), ("Charlie", 1)]
    assert f["rising_competitors"] == ["Bravo", "Charlie"]  # +2, +1; Alpha level at 3


def test_on_time_overall_and_per_rep(db):
    build_data(db)
    f = figures(db)
    assert f["on_time_rate"] == pytest.approx(0.7)
    assert f["on_time_per_rep"] == {
        "UANA": {"entries": 5, "on_time": 5, "rate": 1.0},
        "UBEN": {"entries": 4, "on_time": 2, "rate": 0.5},
        "carl@example.com": {"entries": 1, "on_time": 0, "rate": 0.0},
    }


def test_weekly_feedback_response_rates_reps_missing_and_objections(db):
    build_data(db)
    fb = figures(db)["feedback"]
    assert fb["weeks"] == [
        {
            "week_start": "2026-10-05",
            "prompted": 4,
            "responded": 2,
            "answered": 1,
            "response_rate": 0.5,
        },
        {
            "week_start": "2026-10-12",  # UDAN's pending prompt is not counted
            "prompted": 3,
            "responded": 2,
            "answered": 2,
            "response_rate": pytest.approx(2 / 3),
        },
        {
            "week_start": "2026-10-19",
            "prompted": 2,
            "responded": 2,
            "answered": 2,
            "response_rate": 1.0,
        },
        {
            "week_start": "2026-10-26",
            "prompted": 4,
            "responded": 3,
            "answered": 2,
            "response_rate": 0.75,
        },
    ]
    assert (fb["prompted"], fb["responded"]) == (13, 9)
    assert fb["feedback_response_rate"] == pytest.approx(9 / 13)
    assert figures(db)["feedback_response_rate"] == pytest.approx(9 / 13)
    assert (fb["reps_prompted"], fb["reps_always_responded"]) == (4, 1)
    # most weeks missed first, then by user id
    assert fb["reps_missing"] == [
        {"user_id": "UCAT", "missed": 2},
        {"user_id": "UBEN", "missed": 1},
        {"user_id": "UDAN", "missed": 1},
    ]
    assert fb["worked"] == ["worked 7", "worked 6", "worked 5"]
    assert fb["fell_flat"] == [
        "Integration gaps with Salesforce",
        "Demo crashed",
        "Nothing fell flat",
    ]
    # "integration gaps" twice in September's answer does not count: one answer, other month
    assert [tuple(o) for o in fb["objections"]] == [("price increase", 3), ("security review", 2)]


def test_closing_the_loop_even_median_and_open_loops(db):
    rows = build_data(db)
    f = figures(db)
    assert (f["loop_posts"], f["acknowledged"]) == (8, 4)
    assert f["acknowledged_rate"] == 0.5
    assert f["median_hours_to_ack"] == 7.5  # 2, 5, 10, 30 -> (5 + 10) / 2
    assert [(o["kind"], o["ts"], o["author"]) for o in f["open_loops"]] == [
        ("winloss", rows["P4"].ts, "UBEN"),
        ("feedback", rows["P9"].ts, "UBEN"),
    ]
    assert f["open_loops"][0]["created_at"] == "2026-10-04T10:00:00+00:00"
    assert f["open_loops"][0]["channel"] == "CMKTG"
    # acknowledged first (earliest acknowledgement first), then the newest unacknowledged
    assert [(i["insight"], i["acknowledged"]) for i in f["best_insights"]] == [
        ("Publish a price comparison", True),
        ("Lead with the ROI sheet", True),
        ("insight 1", True),
        ("insight 3", True),
        ("insight 7", False),
    ]
    _text, blocks = digest_blocks.digest_message(f, link_base="https://acme.slack.com/")
    link = f"https://acme.slack.com/archives/CMKTG/p{rows['P4'].ts.replace('.', '')}"
    assert f"<{link}|win/loss entry>" in all_text({"blocks": blocks})
    assert "Still open after 7 days (2)" in all_text({"blocks": blocks})


def test_closing_the_loop_odd_median(db):
    d = add_deal(db, "June deal", "won", "2026-06-10 12:00")
    e = add_entry(db, d, reason="r", category="Product", logged="2026-06-10 13:00")
    add_post(db, "winloss", e.id, "UANA", created="2026-06-11 08:00", acked="2026-06-11 09:00")
    add_post(db, "feedback", 9001, "UANA", created="2026-06-12 08:00", acked="2026-06-12 12:00")
    add_post(db, "feedback", 9002, "UBEN", created="2026-06-13 08:00", acked="2026-06-14 14:00")
    f = figures(db, month=Month(2026, 6), now=at("2026-07-01 09:00"))
    assert (f["loop_posts"], f["acknowledged"], f["acknowledged_rate"]) == (3, 3, 1.0)
    assert f["median_hours_to_ack"] == 4.0  # 1, 4, 30 -> the middle one
    assert f["open_loops"] == []


def test_win_rate_history_for_the_chart(db):
    build_data(db)
    assert win_rate_history(db, OCTOBER, UTC_ZONE) == [
        ("2026-05", None, 0),
        ("2026-06", None, 0),
        ("2026-07", None, 0),
        ("2026-08", None, 0),
        ("2026-09", 0.75, 4),
        ("2026-10", 0.2, 10),
    ]


def test_month_end_in_the_digest_time_zone(db):
    # 03:00 UTC on 1 November is 23:00 on 31 October in New York (EDT until 06:00 UTC)
    add_deal(db, "Late Halloween", "won", "2026-11-01 03:00")
    # 02:00 UTC on 1 October is 22:00 on 30 September in New York
    add_deal(db, "Early October", "lost", "2026-10-01 02:00")
    add_deal(db, "Mid October", "won", "2026-10-15 12:00")
    # 04:00 UTC on 1 November is midnight in New York: November everywhere
    add_deal(db, "November midnight", "lost", "2026-11-01 04:00")
    add_post(db, "feedback", 9100, "UANA", created="2026-11-01 03:30")

    ny = figures(db, tz=NEW_YORK)
    assert (ny["wins"], ny["losses"], ny["win_rate"]) == (2, 0, 1.0)
    assert ny["loop_posts"] == 1
    assert ny["timezone"] == "America/New_York"
    assert (ny["previous"]["wins"], ny["previous"]["losses"]) == (0, 1)
    assert ny["win_rate_change"] == 1.0

    utc = figures(db, tz=UTC_ZONE)
    assert (utc["wins"], utc["losses"], utc["win_rate"]) == (1, 1, 0.5)
    assert utc["loop_posts"] == 0

    ny_nov = figures(db, month=Month(2026, 11), tz=NEW_YORK, now=at("2026-12-01 14:00"))
    assert (ny_nov["wins"], ny_nov["losses"]) == (0, 1)
    utc_nov = figures(db, month=Month(2026, 11), tz=UTC_ZONE, now=at("2026-12-01 14:00"))
    assert (utc_nov["wins"], utc_nov["losses"]) == (1, 1)


def test_rendered_text_has_the_figures(db):
    build_data(db)
    text = digest_blocks.digest_text(figures(db))
    assert text.startswith("Closeloop digest — October 2026 (UTC)\n")
    assert "Won 2 · Lost 8 · No decision 2" in text  # the /winloss form's labels
    assert "Win rate 20% (2 of 10), ▼ 55 pts vs September 2026" in text
    assert "Amount won $3,500.50 · lost $6,000.25" in text  # CURRENCY defaults to USD
    assert "Alpha: 3 deal(s) — Won 1 · Lost 2" in text
    assert "Rising: Bravo, Charlie" in text
    # each week's count; below 5 prompts the count alone
    assert "Responses per week: 10-05 2 of 4, 10-12 2 of 3, 10-19 2 of 2, 10-26 3 of 4" in text
    # no names stored for these reps: their IDs, as text
    assert "Weeks missed (each rep is told privately): UCAT (2), UBEN (1), UDAN (1)" in text
    assert "Most-cited objections: “price increase” (3), “security review” (2)" in text
    assert (
        "Marketing acknowledged 50% (4 of 8) feedback and win/loss posts, in a median of 7.5 h"
        in (text)
    )
    assert "Logged within 24 hours: 70% (7 of 10)" in text
    assert "UANA: 100% (5 of 5)" in text and "UBEN: 2 of 4" in text
    assert "Closed deals with a win/loss entry: 83% (10 of 12)." in text


# --- the CLI ------------------------------------------------------------------------------


RATE_KEYS = (
    "win_rate",
    "coverage",
    "feedback_response_rate",
    "acknowledged_rate",
    "on_time_rate",
)


def test_cli_json_text_and_bad_months(cli_env, session_factory):
    with session_scope(session_factory) as s:
        build_data(s)
    out = closeloop(cli_env, "digest", "--month", "2026-10", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in (
        "month",
        "wins",
        "losses",
        "no_decisions",
        "win_rate",
        "losses_by_competitor",
        "loss_reasons_by_category",
        "feedback_response_rate",
        "acknowledged_rate",
        "median_hours_to_ack",
        "on_time_rate",
    ):
        assert key in data, key
    assert data["month"] == "2026-10"
    assert (data["wins"], data["losses"], data["no_decisions"]) == (2, 8, 2)
    assert data["win_rate"] == pytest.approx(0.2)
    assert data["losses_by_competitor"] == {"Alpha": 2, "Bravo": 2, "Charlie": 1}
    assert data["loss_reasons_by_category"] == {"Price": 4, "Features": 2, "Timing": 2}
    assert data["feedback_response_rate"] == pytest.approx(9 / 13)
    assert data["acknowledged_rate"] == 0.5
    assert data["on_time_rate"] == pytest.approx(0.7)
    assert data["amount_won"] == "3500.50"
    for key in RATE_KEYS:
        assert 0 <= data[key] <= 1, key
    for week in data["feedback"]["weeks"]:
        assert 0 <= week["response_rate"] <= 1
    for rep in data["on_time_per_rep"].values():
        assert 0 <= rep["rate"] <= 1
    # the median depends on "now" (the real clock here) only through open loops, not hours
    assert data["median_hours_to_ack"] == 7.5

    for bad in ("2026-13", "oct"):
        out = closeloop(cli_env, "digest", "--month", bad)
        assert out.returncode == 2, (bad, out.stdout, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("closeloop: "), out.stderr
        assert "Traceback" not in out.stderr and out.stdout == ""

    out = closeloop(cli_env, "digest", "--month", "2026-10")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Closeloop digest — October 2026 (UTC)")
    assert "Won 2 · Lost 8 · No decision 2" in out.stdout

    out = closeloop(cli_env, "digest", "--month", "2026-03")
    assert out.returncode == 0, out.stderr
    assert "No closed deals, weekly feedback or loop posts in March 2026." in out.stdout
    empty = json.loads(closeloop(cli_env, "digest", "--month", "2026-03", "--json").stdout)
    assert empty["has_data"] is False and empty["win_rate"] is None


def test_cli_post_posts_once(cli_env, session_factory, fake_slack):
    with session_scope(session_factory) as s:
        build_data(s)
    first = closeloop(cli_env, "digest", "--month", "2026-10", "--post")
    assert first.returncode == 0, first.stderr
    assert "posted the 2026-10 digest to CMKTG" in first.stdout  # DIGEST_CHANNEL unset
    again = closeloop(cli_env, "digest", "--month", "2026-10", "--post")
    assert again.returncode == 0, again.stderr
    assert "already posted" in again.stdout
    posts = [
        c
        for c in fake_slack.calls_to("chat.postMessage", include_failed=True)
        if c.params["channel"] == "CMKTG"
    ]
    assert len(posts) == 1
    assert len(fake_slack.files) == 1


# --- posting through the fake Slack -------------------------------------------------------


@pytest.fixture
def settings_overrides():
    return {"DIGEST_TIMEZONE": "America/New_York"}


def build_posting_data(session_factory) -> None:
    """October in New York: 3 won, 2 lost (one reason with a channel mention in it)."""
    with session_scope(session_factory) as s:
        for i in range(3):
            d = add_deal(s, f"Won {i}", "won", f"2026-10-{10 + i} 15:00", amount="100")
            add_entry(s, d, reason="fit", category="Product", logged=f"2026-10-{10 + i} 16:00")
        lost = add_deal(s, "Lost one", "lost", "2026-10-20 15:00", owner="UBEN")
        add_entry(
            s,
            lost,
            reason="Budget cut <!channel> & <@U999> said no",
            category="Price",
            competitor="Alpha",
            logged="2026-10-20 16:00",
        )
        # 23:30 on 31 October in New York: October's there
        late = add_deal(s, "Halloween", "lost", "2026-11-01 03:30", owner="UBEN")
        add_entry(
            s,
            late,
            reason="Picked Bravo",
            category="Features",
            competitor="Bravo",
            logged="2026-11-01 04:00",
        )


def digest_posts(slack, *, include_failed=True):
    return [
        c
        for c in slack.calls_to("chat.postMessage", include_failed=include_failed)
        if c.params["channel"] == "CDIGEST"
    ]


def fresh_runtime(h) -> Runtime:
    return h.another_process()


def assert_posted_once_with_chart(h) -> str:
    slack = h.slack
    (post,) = digest_posts(slack)
    assert post.ok and not post.params.get("thread_ts")
    blocks = post.params["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Closeloop digest — October 2026"},
    }
    body = all_text(post.params)
    assert "Won *3* · Lost *2* · No decision *0*" in body
    assert "Win rate *60% (3 of 5)*" in body
    assert "Amount won $300 · lost $0" in body
    assert "Alpha: 1 deal(s) — Won 0 · Lost 1" in body
    assert "Figures in America/New_York" in body
    ts = post.response["ts"]
    files = slack.files
    assert len(files) == 1
    (file,) = files.values()
    assert file["content"].startswith(b"\x89PNG\r\n\x1a\n")
    assert file["name"] == "closeloop-digest-2026-10.png"
    assert file["channels"] == ["CDIGEST"]
    assert file["thread_ts"] == ts
    with session_scope(h.rt.session_factory) as s:
        row = s.scalars(select(Digest)).one()
        assert row.month == date(2026, 10, 1)
        assert (row.channel, row.ts, row.chart_file_id) == ("CDIGEST", ts, file["id"])
    return ts


def test_digest_posts_at_nine_on_the_first_working_day_exactly_once(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    build_posting_data(h.rt.session_factory)
    # Sunday 1 November, 09:00 in New York: not a working day
    clock.set(at("2026-11-01 14:00"))
    tick(h.rt)
    assert digest_posts(slack) == []
    # Monday 2 November 08:59 EST (13:59 UTC): not yet
    clock.set(at("2026-11-02 13:59"))
    tick(h.rt)
    assert digest_posts(slack) == []
    assert slack.files == {}
    clock.set(NOV_2_0900_NEW_YORK)
    tick(h.rt)
    ts = assert_posted_once_with_chart(h)

    # ticking again, a restarted process, and an explicit post: nothing more
    clock.advance(minutes=1)
    tick(h.rt)
    tick(fresh_runtime(h))
    assert digest_jobs.post(h.rt, OCTOBER) is None
    assert digest_jobs.post(fresh_runtime(h), OCTOBER) is None
    clock.advance(days=3)
    tick(h.rt)
    assert assert_posted_once_with_chart(h) == ts
    assert slack.server_errors == []


def test_user_text_in_quotes_is_escaped(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    build_posting_data(h.rt.session_factory)
    clock.set(NOV_2_0900_NEW_YORK)
    tick(h.rt)
    (post,) = digest_posts(slack)
    blocks = json.dumps(post.params["blocks"], ensure_ascii=False)
    assert "Budget cut &lt;!channel&gt; &amp; &lt;@U999&gt; said no" in blocks
    assert "<!channel>" not in blocks and "<@U999>" not in blocks
    assert "<!channel>" not in post.params["text"]


def test_a_late_start_still_posts_once(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    build_posting_data(h.rt.session_factory)
    clock.set(at("2026-11-05 12:00"))  # the bot was down on the 2nd
    rt = fresh_runtime(h)
    tick(rt)
    assert_posted_once_with_chart(h)
    clock.advance(minutes=1)
    tick(rt)
    tick(fresh_runtime(h))
    assert len(digest_posts(slack)) == 1 and len(slack.files) == 1


def test_several_processes_ticking_together_post_once(harness):
    h, clock = harness, harness.clock
    build_posting_data(h.rt.session_factory)
    clock.set(NOV_2_0900_NEW_YORK)
    h.tick_together(3)
    assert_posted_once_with_chart(h)


def test_a_failed_chart_upload_is_retried_by_a_later_tick(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    build_posting_data(h.rt.session_factory)
    clock.set(NOV_2_0900_NEW_YORK)
    slack.fail_next("files.getUploadURLExternal", error="internal_error")
    tick(h.rt)
    assert len(digest_posts(slack)) == 1 and slack.files == {}
    clock.advance(minutes=1)
    tick(h.rt)
    assert_posted_once_with_chart(h)


def test_a_second_process_does_not_upload_the_chart_while_the_first_is_uploading(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    build_posting_data(h.rt.session_factory)
    clock.set(NOV_2_0900_NEW_YORK)
    # the first process's upload is slow: the digest is posted, the chart still on its way
    slack.fail_next("files.getUploadURLExternal", delay=2.0)
    assert digest_jobs.post_due_digest(fresh_runtime(h))
    first_process = fresh_runtime(h)
    # Each process's tick and outbox poll run as the scheduler runs them: with the
    # background limits (bot.db.patient), not a Slack request's short ones.
    first = threading.Thread(target=patiently(first_process.outbox.drain))
    first.start()
    try:
        for _ in range(200):  # until the first process has recorded the digest's ts
            with session_scope(h.rt.session_factory) as s:
                if s.scalars(select(Digest.ts)).first():
                    break
            time.sleep(0.05)
        with patient():
            assert not digest_jobs.post_due_digest(fresh_runtime(h))  # a second process's tick
            fresh_runtime(h).outbox.drain()  # and its outbox: the chart is claimed by the first
    finally:
        first.join(30)
    assert len(digest_posts(slack)) == 1
    assert len(slack.files) == 1


def test_a_refused_post_is_retried_after_its_backoff(harness):
    """not_in_channel: an admin invites the bot, and the digest goes out then, once."""
    h, slack, clock = harness, harness.slack, harness.clock
    build_posting_data(h.rt.session_factory)
    clock.set(NOV_2_0900_NEW_YORK)
    slack.fail_next("chat.postMessage", error="not_in_channel")
    tick(h.rt)
    assert [c.ok for c in digest_posts(slack)] == [False] and slack.files == {}
    clock.advance(seconds=3)
    h.rt.outbox.drain()  # its backoff (5 s at first) is not over: nobody posts
    assert len(digest_posts(slack)) == 1
    clock.advance(minutes=1)
    tick(h.rt)
    assert [c.ok for c in digest_posts(slack)] == [False, True]
    clock.advance(minutes=1)
    tick(h.rt)
    assert len(digest_posts(slack, include_failed=False)) == 1 and len(slack.files) == 1


def test_terminal_text_prints_quotes_verbatim(db):
    d = add_deal(db, "Star", "lost", "2026-10-10 12:00")
    add_entry(
        db,
        d,
        reason="Rated us 2* on support, *not* 5*",
        category="Support",
        logged="2026-10-10 13:00",
    )
    text = digest_blocks.digest_text(figures(db))
    assert "Rated us 2* on support, *not* 5*" in text
