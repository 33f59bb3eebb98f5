"""The monthly digest's lead-quality figures: the month's leads by source (rejection rate and
its trend against the month before), SLA compliance, and, where closed deals carry a source,
win rate and revenue by source. Counted as the Monday report counts (bot.services.lead_report):
by ``handed_at``, each lead as it stands now."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from bot.models import Deal, Lead, Outcome
from bot.services import lead_report
from bot.services.figures import money, rate


def lead_quality(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    prev_start: datetime,
    prev_end: datetime,
    now: datetime,
    rejection_alert: float,
    min_sample: int,
) -> dict:
    """The month's lead figures, with the month before's rejection rates beside them."""
    this_month = and_(Lead.handed_at >= start, Lead.handed_at < end)
    month_before = and_(Lead.handed_at >= prev_start, Lead.handed_at < prev_end)
    sources = lead_report.status_counts(session, this_month, Lead.source)
    before = {g["name"]: g for g in lead_report.status_counts(session, month_before, Lead.source)}
    for group in sources:
        group["rejection_rate"] = rate(group["rejected"], group["rated"])
        earlier = before.get(group["name"])
        group["previous_rated"] = earlier["rated"] if earlier else 0
        group["previous_rejection_rate"] = (
            rate(earlier["rejected"], earlier["rated"]) if earlier else None
        )
        group["flagged"] = (
            group["rated"] >= min_sample
            and group["rejection_rate"] is not None
            and group["rejection_rate"] > rejection_alert
        )
    sla = lead_report.sla_figures(session, this_month, Lead.source, now=now)
    on_time = sum(g["on_time"] for g in sla)
    due = sum(g["due"] for g in sla)
    rated = sum(g["rated"] for g in sources)
    rejected = sum(g["rejected"] for g in sources)
    prev_rated = sum(g["rated"] for g in before.values())
    prev_rejected = sum(g["rejected"] for g in before.values())
    return {
        "handed_over": sum(g["handed_over"] for g in sources),
        "rated": rated,
        "rejected": rejected,
        "rejection_rate": rate(rejected, rated),
        "previous_rated": prev_rated,
        "previous_rejection_rate": rate(prev_rejected, prev_rated),
        "by_source": sources,
        "sla_on_time": on_time,
        "sla_due": due,
        "sla_compliance": rate(on_time, due),
        "rejection_alert": rejection_alert,
        "deals_by_source": deals_by_source(session, start=start, end=end),
    }


def deals_by_source(session: Session, *, start: datetime, end: datetime) -> list[dict]:
    """Deals closed in the month that carry a source: won, lost, win rate, revenue won."""
    won = Deal.outcome == Outcome.WON
    lost = Deal.outcome == Outcome.LOST
    rows = session.execute(
        select(
            Deal.source,
            func.sum(case((won, 1), else_=0)),
            func.sum(case((lost, 1), else_=0)),
            func.sum(case((won, Deal.amount), else_=None)),
        )
        .where(Deal.closed_at >= start, Deal.closed_at < end, Deal.source.is_not(None))
        .group_by(Deal.source)
    ).all()
    found = []
    for source, wins, losses, revenue in rows:
        wins, losses = int(wins or 0), int(losses or 0)
        found.append(
            {
                "source": source,
                "wins": wins,
                "losses": losses,
                "win_rate": rate(wins, wins + losses),
                "revenue": money(revenue) if revenue else None,
            }
        )
    return sorted(found, key=lambda g: (-(g["wins"] + g["losses"]), g["source"]))
