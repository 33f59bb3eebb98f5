"""The monthly digest's lead-quality section: the month's rejection rate by source with its
trend, SLA compliance, and win rate and revenue by the source deals carry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from bot.blocks.digest import digest_message, digest_text
from bot.models import Deal, Lead, LeadStatus
from bot.services import digest as digest_svc
from bot.services.digest import Month

UTC_ZONE = ZoneInfo("UTC")
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def lead(db, source, status, *, day, late=False, rated=True):
    handed = datetime(2026, day[0], day[1], 10, 0, tzinfo=UTC)
    row = Lead(
        origin="import",
        person="Pat",
        source=source,
        handed_at=handed,
        received_at=handed,
        sla_due_at=handed + timedelta(hours=24),
        status=status,
        first_response_at=(handed + timedelta(hours=30 if late else 2)) if rated else None,
    )
    db.add(row)


def deal(db, source, outcome, amount, day):
    closed = datetime(2026, 10, day, 12, 0, tzinfo=UTC)
    db.add(
        Deal(
            external_id=f"d-{source}-{day}-{outcome}",
            name="D",
            outcome=outcome,
            closed_at=closed,
            deadline_at=closed + timedelta(hours=24),
            amount=Decimal(amount) if amount else None,
            source=source,
            origin="import",
        )
    )


def figures(db):
    db.flush()
    return digest_svc.compute(
        db, month=Month(2026, 10), tz=UTC_ZONE, now=NOW, min_sample=5, lead_min_sample=5
    )


def test_the_lead_section_rates_sources_shows_the_trend_and_deals_by_source(db):
    # October: Webinar 4 of 6 rated rejected (flagged), Ads 1 of 5; September: Webinar 1 of 5.
    for status in [LeadStatus.REJECTED] * 4 + [LeadStatus.ACCEPTED] * 2:
        lead(db, "Webinar <!here>", status, day=(10, 5))
    for status in [LeadStatus.REJECTED] + [LeadStatus.ACCEPTED] * 3 + [LeadStatus.NOT_READY]:
        lead(db, "Ads", status, day=(10, 6), late=True)
    lead(db, "Ads", LeadStatus.NEW, day=(10, 7), rated=False)
    for status in [LeadStatus.REJECTED] + [LeadStatus.ACCEPTED] * 4:
        lead(db, "Webinar <!here>", status, day=(9, 10))
    deal(db, "Webinar <!here>", "won", "12000", 3)
    deal(db, "Webinar <!here>", "lost", "5000", 4)
    deal(db, "Ads", "won", None, 5)
    f = figures(db)
    leads = f["leads"]
    assert leads["handed_over"] == 12 and leads["rated"] == 11 and leads["rejected"] == 5
    groups = {g["name"]: g for g in leads["by_source"]}
    web, ads = groups["Webinar <!here>"], groups["Ads"]
    assert web["flagged"] is True
    assert web["previous_rejection_rate"] == 0.2 and ads["flagged"] is False
    assert leads["sla_on_time"] == 6 and leads["sla_due"] == 12  # 5 late, 1 missed
    by_source = {g["source"]: g for g in leads["deals_by_source"]}
    assert by_source["Webinar <!here>"]["revenue"] == "12000.00"
    assert by_source["Ads"]["revenue"] is None and by_source["Ads"]["win_rate"] == 1.0

    text, blocks = digest_message(f)
    shown = json.dumps(blocks)
    assert "Lead quality" in shown and "Deals by source" in shown
    assert "<!here>" not in shown and "Webinar &lt;!here&gt;" in shown
    assert "rejected 67% (4 of 6), was 20% :warning:" in shown
    assert "rated within the SLA *50% (6 of 12)*" in shown
    assert "won 50% (1 of 2), $12,000 won" not in shown  # below the sample: a count
    assert "won 1 of 2, $12,000 won" in shown
    assert "Lead quality" in digest_text(f)


def test_no_lead_section_without_leads_or_sourced_deals(db):
    deal(db, None, "won", "100", 3)
    shown = json.dumps(digest_message(figures(db))[1])
    assert "Lead quality" not in shown and "Deals by source" not in shown
