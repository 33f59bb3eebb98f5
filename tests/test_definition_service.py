"""The definition of a qualified lead as plain functions on a session (both databases):
versions, refusals, the Markdown file, the review periods and figures."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.config import Settings
from bot.models import (
    DefinitionReview,
    Lead,
    LeadDefinition,
    LeadRating,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
)
from bot.services import definition as svc
from bot.services.definition import Period
from bot.services.errors import DomainError, NotAllowed
from tests.conftest import make_settings

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")


def settings(**env: str) -> Settings:
    base = {
        "ADMIN_USERS": "UADMIN,UOWNS,UOWNM",
        "DEFINITION_OWNERS": "UOWNS,UOWNM",
        "LEAD_SALES_CHANNEL": "CSALES",
    }
    base.update(env)
    return make_settings("http://127.0.0.1:9/", "sqlite:///unused.db", **base)


S = settings()
SECTIONS = {"mql": "Fits the ICP and *requested a demo*.", "disqualifiers": "Students."}


def save(db, **changes):
    values = {
        "summary": "A company we can help, with a person who can buy.",
        "sections": SECTIONS,
        "note": "First version",
        "author": "UADMIN",
        "now": NOW,
        "settings": S,
    }
    values.update(changes)
    return svc.save(db, **values)


def notices(db):
    return db.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.kind == OutboxKind.DEFINITION_CHANGED)
        .order_by(OutboxMessage.id)
    ).all()


def test_every_save_is_a_new_version_and_both_channels_are_told_once(db):
    assert svc.current(db) is None
    first = save(db)
    assert (first.version, first.author, first.note) == (1, "UADMIN", "First version")
    assert first.sections["mql"] == SECTIONS["mql"] and first.sections["sales_ready"] == ""
    second = save(
        db, sections={**SECTIONS, "authority": "Director or above"}, note="Authority added"
    )
    third = save(db, summary="Changed summary", note="Shorter", author="UOWNS")
    assert [d.version for d in svc.history(db)] == [3, 2, 1]
    assert svc.current(db).version == third.version == 3
    assert second.sections["authority"] == "Director or above"
    assert svc.get(db, 1).summary.startswith("A company")
    # each version announced once in sales's channel and once in marketing's
    assert [(m.key, m.channel, m.subject_id) for m in notices(db)] == [
        (f"definition-changed:{v}:{c}", c, v) for v in (1, 2, 3) for c in ("CSALES", "CMKTG")
    ]
    with pytest.raises(DomainError, match="no version 9"):
        svc.get(db, 9)


def test_one_channel_for_both_teams_is_told_once(db):
    one = settings(LEAD_SALES_CHANNEL="CMKTG")
    save(db, settings=one)
    assert [m.channel for m in notices(db)] == ["CMKTG"]


def test_an_unchanged_save_is_refused(db):
    save(db)
    with pytest.raises(DomainError, match="Nothing changed: this is version 1"):
        save(db, note="Saved again", sections={**SECTIONS, "sql": "  "})
    assert svc.current(db).version == 1 and len(notices(db)) == 2


def test_a_non_admin_non_owner_is_refused_and_the_operator_is_not_checked(db):
    with pytest.raises(NotAllowed, match="Only Closeloop admins"):
        save(db, author="UREP")
    with pytest.raises(NotAllowed):
        save(db, author=None)  # from Slack there is always a user
    assert svc.current(db) is None and notices(db) == []
    assert save(db, author=None, operator=True).author is None
    assert save(db, author="UREP", operator=True, note="x", summary="y").author == "UREP"


def test_a_save_over_a_newer_version_is_refused(db):
    save(db)
    save(db, summary="Second", note="second")
    with pytest.raises(DomainError, match="Version 2 was saved while you were editing version 1"):
        save(db, summary="Third", note="third", base_version=1)
    assert save(db, summary="Third", note="third", base_version=2).version == 3


def test_problems_are_named_per_field(db):
    found = svc.problems(summary=" ", sections={"mql": "x" * 3001}, note="")
    assert set(found) == {"summary", "mql", "note"}
    with pytest.raises(DomainError, match="Unknown section 'budget'"):
        save(db, sections={"budget": "yes"})
    with pytest.raises(DomainError, match="Say what changed"):
        save(db, note="  ")


FILE = """# Qualified lead

A company of 50+ people in our industries, with someone who can buy.

## marketing-qualified LEAD (mql)
Fits the ICP and took an action.

### Actions that count
Demo request, pricing page.

## SQL
Need, budget, timeline.

## Behavioral signals
Visited pricing twice.

##   HAND-OFF rules  ##
Marketing passes it with the context:
```
## not a heading inside a fence
```
"""


def test_parse_markdown_maps_headings_tolerantly():
    summary, sections = svc.parse_markdown(FILE)
    assert summary == "A company of 50+ people in our industries, with someone who can buy."
    assert set(sections) == {"mql", "sql", "behavioural", "handoff"}
    assert sections["mql"].endswith("Demo request, pricing page.")
    assert "### Actions that count" in sections["mql"]
    assert "## not a heading inside a fence" in sections["handoff"]
    # the title is the summary when nothing is written under it
    assert svc.parse_markdown("# Only a title\n## Disqualifiers\nStudents")[0] == "Only a title"


def test_parse_markdown_errors_are_one_clear_line():
    with pytest.raises(DomainError) as err:
        svc.parse_markdown("# T\nsummary\n## Budget\nyes\n")
    message = str(err.value)
    assert message.startswith("line 3: unknown section 'Budget'")
    for _key, title in svc.SECTIONS:
        assert f"## {title}" in message
    with pytest.raises(DomainError, match="line 4: the section 'Sales-qualified lead"):
        svc.parse_markdown("# T\ns\n## SQL\n## sales qualified\n")
    with pytest.raises(DomainError, match="no summary"):
        svc.parse_markdown("## MQL\nx\n")
    with pytest.raises(DomainError, match="second '# ' title"):
        svc.parse_markdown("# A\nsummary\n## MQL\nx\n# B\n")


def test_render_markdown_reads_back_as_it_was(db):
    saved = save(db, sections={k: f"Text for {k}" for k in svc.SECTION_KEYS})
    summary, sections = svc.parse_markdown(svc.render_markdown(saved))
    assert summary == saved.summary and sections == saved.sections
    template = svc.render_markdown(None)
    assert [k for k, _ in svc.SECTIONS] == list(svc.parse_markdown(template)[1])


def test_periods_and_when_their_review_is_due():
    q = Period.containing(NOW, UTC_ZONE, 3)
    assert str(q) == "2026-Q4" and str(q.previous()) == "2026-Q3" and str(q.next()) == "2027-Q1"
    assert q.bounds(UTC_ZONE) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert str(Period.containing(NOW, UTC_ZONE, 1)) == "2026-11"
    assert str(Period.containing(NOW, UTC_ZONE, 6)) == "2026-H2"
    assert str(Period.containing(NOW, UTC_ZONE, 12)) == "2026"
    assert Period.parse("2026-Q4", 3) == q and Period.parse("2026-Q4", 6) is None
    five = Period.containing(NOW, UTC_ZONE, 5)
    assert Period.parse(str(five), 5) == five
    # 2027-01-01 is a Friday: the Q4 review is due that day at DIGEST_TIME
    assert svc.review_due_at(q, at=time(9), tz=UTC_ZONE) == datetime(2027, 1, 1, 9, tzinfo=UTC)
    # 2026-08-01 is a Saturday: the July review waits for Monday the 3rd
    july = Period(2026, 7, 1)
    assert svc.review_due_at(july, at=time(9), tz=UTC_ZONE) == datetime(2026, 8, 3, 9, tzinfo=UTC)


def test_a_review_is_asked_once_per_period_and_answered_once(db):
    save(db)
    q3 = Period(2026, 7, 3)
    review = svc.ask_review(db, period=q3, owners=["UOWNS", "UOWNM", "UOWNS"], now=NOW)
    assert review is not None and review.version == 1 and review.period == "2026-Q3"
    assert svc.ask_review(db, period=q3, owners=["UOWNS"], now=NOW) is None
    asked = db.scalars(
        select(OutboxMessage.key).where(OutboxMessage.kind == OutboxKind.DEFINITION_REVIEW)
    ).all()
    assert sorted(asked) == ["definition-review:2026-Q3:UOWNM", "definition-review:2026-Q3:UOWNS"]
    with pytest.raises(NotAllowed):
        svc.reviewed(db, period="2026-Q3", by="UREP", outcome="still_right", now=NOW, settings=S)
    assert svc.reviewed(
        db, period="2026-Q3", by="UOWNM", outcome="still_right", now=NOW, settings=S
    )
    assert not svc.reviewed(
        db, period="2026-Q3", by="UADMIN", outcome="still_right", now=NOW, settings=S
    )
    assert (review.reviewed_by, review.outcome) == ("UOWNM", "still_right")
    with pytest.raises(DomainError, match="no review"):
        svc.reviewed(db, period="2025-Q1", by="UOWNM", outcome="still_right", now=NOW, settings=S)


def test_an_edit_answers_the_open_review(db):
    save(db)
    review = svc.ask_review(db, period=Period(2026, 7, 3), owners=["UOWNS"], now=NOW)
    save(db, summary="Edited", note="Edited at review", author="UOWNS", now=NOW + timedelta(1))
    assert (review.outcome, review.reviewed_by) == ("edited", "UOWNS")


def test_not_reviewed_for_two_periods(db):
    assert svc.review_status(db, now=NOW, months=3).version is None
    save(db, now=NOW)
    later = NOW + timedelta(days=182)  # May 19 2027: six months and a day
    assert not svc.review_status(db, now=NOW + timedelta(days=180), months=3).overdue
    status = svc.review_status(db, now=later, months=3)
    assert status.overdue and status.version == 1 and status.last_reviewed_at == NOW
    # a review answered counts
    db.add(DefinitionReview(period="2027-Q1", version=1, asked_at=later, reviewed_at=later))
    db.flush()
    assert not svc.review_status(db, now=later, months=3).overdue
    # and so does an edit
    assert svc.review_status(db, now=later + timedelta(days=200), months=3).overdue
    save(db, summary="Edited", note="x", now=later + timedelta(days=200))
    assert not svc.review_status(db, now=later + timedelta(days=200), months=3).overdue


def lead(db, *, source, status, handed_at, reasons=(), version=None):
    row = Lead(
        origin="hook",
        person="P",
        source=source,
        handed_at=handed_at,
        sla_due_at=handed_at + timedelta(hours=24),
        status=status,
        definition_version=version,
    )
    db.add(row)
    db.flush()
    for i, reason in enumerate(reasons):
        db.add(
            LeadRating(
                lead_id=row.id,
                rating=LeadStatus.REJECTED if reason else LeadStatus.ACCEPTED,
                reason=reason,
                rated_by="UREP",
                rated_at=handed_at + timedelta(hours=1 + i),
                definition_version=version,
            )
        )
    db.flush()
    return row


def test_rejection_figures_of_a_period(db):
    start, end = Period(2026, 7, 3).bounds(UTC_ZONE)
    at = datetime(2026, 8, 10, tzinfo=UTC)
    for _ in range(3):
        lead(db, source="Webinar", status=LeadStatus.REJECTED, handed_at=at, reasons=["Bad data"])
    # rejected first for a reason, then again for another: the latest counts
    lead(
        db,
        source="Webinar",
        status=LeadStatus.REJECTED,
        handed_at=at,
        reasons=["Bad data", "Duplicate"],
    )
    lead(db, source="Webinar", status=LeadStatus.ACCEPTED, handed_at=at, reasons=[None])
    lead(db, source="Ads", status=LeadStatus.NEW, handed_at=at)
    lead(db, source="Ads", status=LeadStatus.REJECTED, handed_at=end, reasons=["Bad data"])  # Q4
    figures = svc.rejection_figures(db, start=start, end=end, min_sample=5)
    assert (figures["handed"], figures["rated"], figures["rejected"]) == (6, 5, 4)
    assert figures["rate"] == pytest.approx(0.8)
    assert figures["reasons"] == [("Bad data", 3), ("Duplicate", 1)]
    webinar, ads = figures["sources"]
    assert webinar == {"source": "Webinar", "handed": 5, "rated": 5, "rejected": 4, "rate": 0.8}
    assert ads == {"source": "Ads", "handed": 1, "rated": 0, "rejected": 0, "rate": None}


def test_ratings_record_the_version_in_force(db):
    save(db)
    first = lead(
        db,
        source="Ads",
        status=LeadStatus.ACCEPTED,
        handed_at=NOW,
        reasons=[None],
        version=svc.current(db).version,
    )
    save(db, summary="Second", note="second")
    second = lead(
        db,
        source="Ads",
        status=LeadStatus.ACCEPTED,
        handed_at=NOW,
        reasons=[None],
        version=svc.current(db).version,
    )
    assert [r.definition_version for r in (first.ratings[0], second.ratings[0])] == [1, 2]
    assert db.get(LeadDefinition, 2).summary == "Second"
    assert date(2026, 11, 18) == NOW.date()
