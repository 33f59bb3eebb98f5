"""The Monday lead report: figures against a week of leads whose answers are known by
construction (three sources, one above 30%), the Block Kit message (escaped, nobody pinged,
within Slack's limits) and the terminal text.

Every expected number below was worked out by hand from the rows inserted; none is
recomputed with the code under test.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.blocks import lead_report as report_blocks
from bot.models import Lead, LeadDefinition, LeadRating, LeadStatus, Member
from bot.services import lead_report as report_svc
from bot.services.errors import DomainError
from bot.services.lead_report import IsoWeek

UTC_ZONE = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")
W49 = IsoWeek(2026, 49)  # Monday 30 November to Sunday 6 December 2026
# When the report on W49 is due (LEAD_REPORT_SCHEDULE's default, mon 09:00, in UTC)
MON_DEC_7_0900 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

WEBINAR, PAID, REFERRAL = "Webinar", "Paid search", "Referral <!channel> & <@U999>"
BAD_DATA, DUPLICATE, NO_BUDGET = "Bad data", "Duplicate", "Bad fit: no budget"
COMPETITOR = "Competitor's customer"


def at(text: str) -> datetime:
    """``"2026-12-01 10:00"`` as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


_n = iter(range(1, 100_000))


def add_lead(
    s,
    source,
    *,
    status=LeadStatus.NEW,
    hours=None,
    reason=None,
    owner="UANA",
    campaign=None,
    handed="2026-12-01 10:00",
    sla_hours=24,
    earlier=None,
) -> Lead:
    """A lead handed over at ``handed``, first rated ``hours`` later with ``status`` (and
    ``reason``); ``earlier``: (status, reason) of a first rating the rep changed an hour
    later (the latest rating is the lead's status)."""
    handed_at = at(handed) if isinstance(handed, str) else handed
    first = None if hours is None else handed_at + timedelta(hours=hours)
    lead = Lead(
        external_id=f"test:{next(_n)}",
        origin="import",
        person="Pat Doe",
        source=source,
        campaign=campaign,
        owner_user_id=owner,
        handed_at=handed_at,
        received_at=handed_at,
        sla_due_at=handed_at + timedelta(hours=sla_hours),
        status=status,
        first_response_at=first,
    )
    s.add(lead)
    s.flush()
    if first is not None:
        rated_at = first
        if earlier is not None:
            s.add(
                LeadRating(
                    lead_id=lead.id,
                    rating=earlier[0],
                    reason=earlier[1],
                    rated_by=owner or "UMGR",
                    rated_at=first,
                )
            )
            rated_at = first + timedelta(hours=1)
        s.add(
            LeadRating(
                lead_id=lead.id,
                rating=status,
                reason=reason,
                rated_by=owner or "UMGR",
                rated_at=rated_at,
            )
        )
        s.flush()
    return lead


A, NR, R, NEW = LeadStatus.ACCEPTED, LeadStatus.NOT_READY, LeadStatus.REJECTED, LeadStatus.NEW


def build_week(s) -> None:
    """Week 49 of 2026 (UTC): 28 leads from three sources.

    Webinar (UANA, 12): accepted 5 (1-5 h), not ready 1 (6 h), rejected 5: Bad data 3 (7, 8,
    30 h; the 8 h one first rated Duplicate), Duplicate 2 (40, 50 h); 1 never rated (missed).
    Rejection rate 5 of 11 rated = 45%: flagged. Campaigns: 8 "Q4 webinar", 4 none.
    Paid search (UBEN, 11, campaign "Brand"): accepted 7 (1, 1, 2, 2, 3, 3, 4 h; the 4 h one
    first rated rejected, Bad data), not ready 1 (10 h), rejected 3: no budget 2 (20, 26 h),
    Bad data 1 (5 h). 3 of 11 = 27%: not flagged.
    Referral (5, no campaign): accepted 1 (UANA, 12 h), rejected 3 Competitor's customer
    (UANA 2 h, UBEN 100 h, UBEN 3 h), and one (UBEN) handed on Sunday evening whose SLA still
    runs. 3 of 4 = 75%, but 4 rated is below the sample of 10: not flagged.
    Outside the week: a lead on Sunday 29 November 23:30 and one on Monday 7 December 00:00.
    """
    for i, h in enumerate((1, 2, 3, 4, 5)):
        add_lead(s, WEBINAR, status=A, hours=h, campaign="Q4 webinar" if i < 4 else None)
    add_lead(s, WEBINAR, status=NR, hours=6, campaign="Q4 webinar")
    add_lead(s, WEBINAR, status=R, hours=7, reason=BAD_DATA, campaign="Q4 webinar")
    add_lead(
        s,
        WEBINAR,
        status=R,
        hours=8,
        reason=BAD_DATA,
        earlier=(R, DUPLICATE),
        campaign="Q4 webinar",
    )
    add_lead(s, WEBINAR, status=R, hours=30, reason=BAD_DATA, campaign="Q4 webinar")
    add_lead(s, WEBINAR, status=R, hours=40, reason=DUPLICATE)
    add_lead(s, WEBINAR, status=R, hours=50, reason=DUPLICATE)
    add_lead(s, WEBINAR, handed="2026-12-02 09:00")  # never rated: missed
    for h in (1, 1, 2, 2, 3, 3):
        add_lead(s, PAID, status=A, hours=h, owner="UBEN", campaign="Brand")
    add_lead(s, PAID, status=A, hours=4, owner="UBEN", campaign="Brand", earlier=(R, BAD_DATA))
    add_lead(s, PAID, status=NR, hours=10, owner="UBEN", campaign="Brand")
    add_lead(s, PAID, status=R, hours=20, reason=NO_BUDGET, owner="UBEN", campaign="Brand")
    add_lead(s, PAID, status=R, hours=26, reason=NO_BUDGET, owner="UBEN", campaign="Brand")
    add_lead(s, PAID, status=R, hours=5, reason=BAD_DATA, owner="UBEN", campaign="Brand")
    add_lead(s, REFERRAL, status=A, hours=12)
    add_lead(s, REFERRAL, status=R, hours=2, reason=COMPETITOR)
    add_lead(s, REFERRAL, status=R, hours=100, reason=COMPETITOR, owner="UBEN")
    add_lead(s, REFERRAL, status=R, hours=3, reason=COMPETITOR, owner="UBEN")
    add_lead(s, REFERRAL, owner="UBEN", handed="2026-12-06 20:00")  # due Mon 20:00: running
    # outside the week in UTC (the second is Sunday evening in New York)
    add_lead(s, WEBINAR, status=R, hours=1, reason=BAD_DATA, handed="2026-11-29 23:30")
    add_lead(s, WEBINAR, status=R, hours=1, reason=BAD_DATA, handed="2026-12-07 00:00")
    s.add(Member(user_id="UANA", name="ana"))
    s.add(Member(user_id="UBEN", name="ben <b>"))
    s.flush()


def figures(s, *, tz=UTC_ZONE, now=MON_DEC_7_0900, **kwargs) -> dict:
    return report_svc.compute(s, week=W49, tz=tz, now=now, **kwargs)


def by_name(groups: list[dict]) -> dict:
    return {g["name"]: g for g in groups}


# --- weeks --------------------------------------------------------------------------------


def test_iso_week_parse_bounds_and_previous():
    assert IsoWeek.parse("2026-W49") == W49
    assert IsoWeek.parse(" 2026-w49 ") == W49
    assert IsoWeek.parse("2026-W01").monday == date(2025, 12, 29)  # ISO week 1 starts in 2025
    assert IsoWeek.parse("2026-W53").monday == date(2026, 12, 28)  # 2026 has 53 weeks
    assert str(IsoWeek(2026, 1)) == "2026-W01"
    assert W49.monday == date(2026, 11, 30) and W49.sunday == date(2026, 12, 6)
    assert IsoWeek(2026, 1).previous() == IsoWeek(2025, 52)
    assert IsoWeek.containing(at("2026-12-07 03:00"), NEW_YORK) == W49  # Sunday night there
    assert W49.bounds(NEW_YORK) == (at("2026-11-30 05:00"), at("2026-12-07 05:00"))
    for bad in ("2026-W54", "2025-W53", "2026-49", "2026-W00", "W49", "", "1999-W10"):
        with pytest.raises(DomainError, match="not an ISO week like 2026-W49"):
            IsoWeek.parse(bad)


# --- figures ------------------------------------------------------------------------------


def test_counts_by_source_with_the_one_source_above_the_alert_flagged(db):
    build_week(db)
    f = figures(db)
    assert f["week"] == "2026-W49"
    assert (f["week_start"], f["week_end"]) == ("2026-11-30", "2026-12-06")
    assert (f["handed_over"], f["accepted"], f["not_ready"], f["rejected"], f["no_response"]) == (
        28,
        13,
        2,
        11,
        2,
    )
    assert f["rejected_by_reason"] == {BAD_DATA: 4, COMPETITOR: 3, NO_BUDGET: 2, DUPLICATE: 2}
    assert list(f["rejected_by_reason"]) == [BAD_DATA, COMPETITOR, NO_BUDGET, DUPLICATE]
    assert [g["name"] for g in f["by_source"]] == [WEBINAR, PAID, REFERRAL]  # most leads first
    src = by_name(f["by_source"])
    web, paid, ref = src[WEBINAR], src[PAID], src[REFERRAL]
    assert [web[k] for k in ("handed_over", "accepted", "not_ready", "rejected")] == [12, 5, 1, 5]
    assert (web["no_response"], web["rated"]) == (1, 11)
    assert web["rejected_by_reason"] == {BAD_DATA: 3, DUPLICATE: 2}  # the latest rating's
    assert web["rejection_rate"] == pytest.approx(5 / 11) and web["flagged"] is True
    assert [paid[k] for k in ("handed_over", "accepted", "not_ready", "rejected")] == [11, 7, 1, 3]
    assert paid["rejected_by_reason"] == {NO_BUDGET: 2, BAD_DATA: 1}  # the re-rated one: none
    assert paid["rejection_rate"] == pytest.approx(3 / 11) and paid["flagged"] is False
    assert [ref[k] for k in ("handed_over", "accepted", "rejected", "no_response")] == [5, 1, 3, 1]
    assert ref["rejection_rate"] == pytest.approx(0.75) and ref["flagged"] is False  # 4 rated
    assert f["flagged_sources"] == [WEBINAR]


def test_by_campaign(db):
    build_week(db)
    camp = by_name(figures(db)["by_campaign"])
    assert set(camp) == {"Q4 webinar", "Brand", None}
    assert [camp["Brand"][k] for k in ("handed_over", "accepted", "not_ready", "rejected")] == [
        11,
        7,
        1,
        3,
    ]
    q4 = camp["Q4 webinar"]
    assert [q4[k] for k in ("handed_over", "accepted", "not_ready", "rejected")] == [8, 4, 1, 3]
    assert q4["rejected_by_reason"] == {BAD_DATA: 3}
    # no campaign: webinar's 5th accepted, 2 Duplicate, 1 missed; referral's 5
    none = camp[None]
    assert (none["handed_over"], none["accepted"], none["rejected"], none["no_response"]) == (
        9,
        2,
        5,
        2,
    )
    assert none["rejected_by_reason"] == {COMPETITOR: 3, DUPLICATE: 2}


def test_sla_compliance_and_median_time_to_first_response_by_source_and_rep(db):
    build_week(db)
    sla = figures(db)["sla"]
    assert (sla["on_time"], sla["due"]) == (21, 27)
    assert sla["compliance"] == pytest.approx(21 / 27)
    assert sla["median_hours_to_first_response"] == 4.5  # 26 responses: (4 + 5) / 2
    src = by_name(sla["by_source"])
    assert [src[WEBINAR][k] for k in ("on_time", "late", "missed", "sla_running")] == [8, 3, 1, 0]
    assert src[WEBINAR]["compliance"] == pytest.approx(8 / 12)
    assert src[WEBINAR]["median_hours_to_first_response"] == 6.0  # 11 responses
    assert [src[PAID][k] for k in ("on_time", "late", "missed", "due")] == [10, 1, 0, 11]
    assert src[PAID]["median_hours_to_first_response"] == 3.0
    assert [src[REFERRAL][k] for k in ("on_time", "late", "missed", "sla_running")] == [3, 1, 0, 1]
    assert src[REFERRAL]["median_hours_to_first_response"] == 7.5  # (3 + 12) / 2
    rep = by_name(sla["by_rep"])
    assert [rep["UANA"][k] for k in ("leads", "on_time", "late", "missed", "due")] == [
        14,
        10,
        3,
        1,
        14,
    ]
    assert rep["UANA"]["median_hours_to_first_response"] == 6.0
    assert [rep["UBEN"][k] for k in ("leads", "on_time", "late", "missed", "sla_running")] == [
        14,
        11,
        2,
        0,
        1,
    ]
    assert rep["UBEN"]["median_hours_to_first_response"] == 3.0


def test_an_unrated_lead_counts_as_missed_only_once_its_sla_has_run_out(db):
    build_week(db)
    # Wednesday 09:00: the never-rated webinar lead (due Thursday 09:00) still has time
    sla = figures(db, now=at("2026-12-02 09:00"))["sla"]
    web = by_name(sla["by_source"])[WEBINAR]
    assert (web["missed"], web["sla_running"]) == (0, 1)


def test_the_week_is_read_in_the_report_time_zone(db):
    build_week(db)
    f = figures(db, tz=NEW_YORK)
    # Monday 7 December 00:00 UTC is Sunday evening in New York: W49 there
    web = by_name(f["by_source"])[WEBINAR]
    assert (web["handed_over"], web["rejected"]) == (13, 6)
    assert f["timezone"] == "America/New_York"


def test_below_the_sample_no_flag_and_the_alert_is_a_setting(db):
    build_week(db)
    assert figures(db, min_sample=12)["flagged_sources"] == []  # 11 rated webinar leads
    f = figures(db, min_sample=4, rejection_alert=0.25)
    assert f["flagged_sources"] == [WEBINAR, PAID, REFERRAL]
    assert figures(db, rejection_alert=0.5)["flagged_sources"] == []  # 45% is not above 50%


def test_the_definition_in_force_is_the_newest_version(db):
    build_week(db)
    assert figures(db)["definition"] is None
    db.add(LeadDefinition(version=1, summary="v1", sections={}))
    db.add(LeadDefinition(version=2, summary="v2", sections={}))
    db.flush()
    assert figures(db)["definition"]["version"] == 2


def test_an_empty_week(db):
    f = figures(db)
    assert f["has_data"] is False and f["handed_over"] == 0
    assert f["by_source"] == [] and f["sla"]["compliance"] is None
    assert f["sla"]["median_hours_to_first_response"] is None
    assert report_svc.has_leads(db, W49, UTC_ZONE) is False
    text, blocks = report_blocks.report_message(f)
    assert "No leads were handed over" in text
    assert "none written yet" in json.dumps(blocks)
    json.dumps(f)  # JSON-able


def test_figures_are_json_able(db):
    build_week(db)
    data = json.loads(json.dumps(figures(db)))
    assert data["flagged_sources"] == [WEBINAR]


# --- the message --------------------------------------------------------------------------


def all_text(text: str, blocks: list) -> str:
    return json.dumps(blocks, ensure_ascii=False) + text


def test_the_message_flags_exactly_the_source_with_counts_and_pings_nobody(db):
    build_week(db)
    db.add(LeadDefinition(version=3, summary="v3", sections={}))
    db.flush()
    text, blocks = report_blocks.report_message(figures(db))
    body = all_text(text, blocks)
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == (
        "Lead hand-off report — week of Mon 30 Nov 2026 (2026-W49)"
    )
    assert (
        "Handed over *28* · accepted *13* · not ready *2* · rejected *11* · no response *2*" in body
    )
    assert ":warning: *Webinar*: 45% (5 of 11) of its rated leads rejected, above 30%" in body
    assert body.count(":warning:") == 2  # the flag, and Webinar's line in "By source"
    assert "rejection rate 27% (3 of 11)" in body  # paid search: a percentage, not flagged
    assert "rejection rate 3 of 4" in body  # referral: below the sample, a count
    assert "Bad data 3, Duplicate 2" in body
    assert "Lead definition in force: version 3" in body
    assert "ana: within SLA 71% (10 of 14) (late 3, missed 1) · median 6 h" in body
    # user text escaped; reps named, never mentioned
    assert "Referral &lt;!channel&gt; &amp; &lt;@U999&gt;" in body
    assert "ben &lt;b&gt;" in body
    assert "<@" not in body and "<!" not in body and "<#" not in body
    assert "rejection rate above 30%: Webinar" in text


def test_the_message_stays_within_block_kit_limits(db):
    for i in range(120):  # many sources, campaigns and reps, with long names
        add_lead(
            db,
            f"Source {i} " + "&" * 200,
            status=R,
            hours=1,
            reason="Bad data",
            campaign=f"Campaign {i} " + "<" * 200,
            owner=f"U{i:05d}",
        )
    text, blocks = report_blocks.report_message(figures(db, min_sample=1))
    assert len(blocks) <= report_blocks.MAX_BLOCKS
    for block in blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        if block["type"] == "context":
            assert all(len(e["text"]) <= 3000 for e in block["elements"])
    assert len(text) <= 4000
    assert "… and 95 more" in all_text(text, blocks)


def test_the_terminal_text_prints_names_as_typed(db):
    build_week(db)
    out = report_blocks.report_text(figures(db))
    assert out.startswith("Lead hand-off report — week of Mon 30 Nov 2026 (2026-W49) (UTC)")
    assert "Referral <!channel> & <@U999>" in out
    assert "Lead definition in force: none written yet" in out
    assert "*" not in out.replace("Referral", "")  # no mrkdwn emphasis in a terminal
