"""The Monday report's figures: last week's leads, computed with SQL aggregates.

A week is an ISO week, Monday 00:00 to the next Monday 00:00 in LEAD_REPORT_TIMEZONE; a lead
belongs to the week it was handed over in (``handed_at``). Each lead counts as it stands when
the report is made: its status is its latest rating.

- Rejection rate (per source) = rejected / rated, rated = accepted + not ready + rejected.
  "Not ready" is not counted as unqualified: the playbook's alarm is for leads "rated
  unqualified", and a lead sent back for nurture is a timing call, not a scoring failure (it is
  shown beside the rate, with its own count). A source is flagged when its rate is above
  LEAD_REJECTION_ALERT and at least LEAD_MIN_SAMPLE of its leads are rated; below that sample
  the rate is shown as a count ("3 of 9") and never flagged.
- SLA: a lead first rated at or before ``sla_due_at`` is on time; rated after it, late; not
  rated and past it, missed. A lead whose SLA is still running is not counted yet. Compliance
  = on time / (on time + late + missed).
- Time to first response: the hours from ``handed_at`` to ``first_response_at`` (wall-clock
  hours, whatever LEAD_SLA_WORKING_HOURS says), the median over the leads rated so far.

Rates are fractions from 0 to 1, None when there is nothing to divide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from bot.models import Lead, LeadRating, LeadStatus
from bot.services import definition as definition_svc
from bot.services.calendar import local_instant
from bot.services.errors import DomainError
from bot.services.figures import hours_between, median, rate
from bot.services.roster import display_names

NO_REASON = "No reason given"


@dataclass(frozen=True)
class IsoWeek:
    """An ISO week (``2026-W49``): Monday to Sunday."""

    year: int
    week: int

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        """``2026-W49`` -> IsoWeek; DomainError with one clear line otherwise."""
        match = re.fullmatch(r"\s*(\d{4})-?[Ww](\d{1,2})\s*", text or "")
        hint = f"--week {text!r} is not an ISO week like 2026-W49 (YYYY-Www)"
        if not match or not 2000 <= int(match[1]) <= 9998:
            raise DomainError(hint)
        try:
            date.fromisocalendar(int(match[1]), int(match[2]), 1)
        except ValueError:
            raise DomainError(hint) from None
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def of(cls, day: date) -> IsoWeek:
        year, week, _ = day.isocalendar()
        return cls(year, week)

    @classmethod
    def containing(cls, instant: datetime, tz: ZoneInfo) -> IsoWeek:
        return cls.of(instant.astimezone(tz).date())

    @property
    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.week, 1)

    @property
    def sunday(self) -> date:
        return self.monday + timedelta(days=6)

    def previous(self) -> IsoWeek:
        return IsoWeek.of(self.monday - timedelta(days=7))

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) of the week in ``tz``, as UTC instants."""
        midnight = datetime.min.time()
        return (
            local_instant(self.monday, midnight, tz),
            local_instant(self.monday + timedelta(days=7), midnight, tz),
        )

    def __str__(self) -> str:
        return f"{self.year:04d}-W{self.week:02d}"


def _median_hours(session: Session, hours, where: ColumnElement[bool]) -> float | None:
    """The median of ``hours`` over the leads ``where`` selects, to a tenth of an hour."""
    found = median(session, select(hours).select_from(Lead).where(where))
    return None if found is None else round(found, 1)


def _group_key(column: ColumnElement, value: str | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def status_counts(session: Session, in_week: ColumnElement[bool], key) -> list[dict]:
    """Per value of ``key``: handed over, accepted, not ready, rejected, no response."""

    def count(status: LeadStatus):
        return func.sum(case((Lead.status == status, 1), else_=0))

    rows = session.execute(
        select(
            key.label("key"),
            func.count(Lead.id),
            count(LeadStatus.ACCEPTED),
            count(LeadStatus.NOT_READY),
            count(LeadStatus.REJECTED),
            count(LeadStatus.NEW),
        )
        .where(in_week)
        .group_by(key)
    ).all()
    found = []
    for value, n, accepted, not_ready, rejected, new in rows:
        accepted, not_ready, rejected = int(accepted or 0), int(not_ready or 0), int(rejected or 0)
        found.append(
            {
                "name": value,
                "handed_over": n,
                "accepted": accepted,
                "not_ready": not_ready,
                "rejected": rejected,
                "no_response": int(new or 0),
                "rated": accepted + not_ready + rejected,
            }
        )
    # most leads first, then by name (no source last among equals)
    return sorted(found, key=lambda g: (-g["handed_over"], g["name"] is None, g["name"] or ""))


def rejections_by_reason(
    session: Session, in_week: ColumnElement[bool], key
) -> dict[str | None, dict[str, int]]:
    """Per value of ``key``: the rejected leads by their latest rating's reason."""
    ranked = select(
        LeadRating.lead_id.label("lead_id"),
        LeadRating.reason.label("reason"),
        func.row_number()
        .over(
            partition_by=LeadRating.lead_id,
            order_by=(LeadRating.rated_at.desc(), LeadRating.id.desc()),
        )
        .label("n"),
    ).subquery()
    reason = func.coalesce(ranked.c.reason, NO_REASON)
    rows = session.execute(
        select(key.label("key"), reason.label("reason"), func.count())
        .select_from(Lead)
        .join(ranked, and_(ranked.c.lead_id == Lead.id, ranked.c.n == 1))
        .where(in_week, Lead.status == LeadStatus.REJECTED)
        .group_by(key, reason)
        .order_by(func.count().desc(), reason)
    ).all()
    found: dict[str | None, dict[str, int]] = {}
    for value, why, n in rows:
        found.setdefault(value, {})[why] = n
    return found


def sla_figures(
    session: Session, in_week: ColumnElement[bool], key, *, now: datetime
) -> list[dict]:
    """Per value of ``key``: SLA compliance and the median hours to the first response."""
    responded = Lead.first_response_at.is_not(None)
    on_time = and_(responded, Lead.first_response_at <= Lead.sla_due_at)
    late = and_(responded, Lead.first_response_at > Lead.sla_due_at)
    missed = and_(Lead.first_response_at.is_(None), Lead.sla_due_at <= now)
    running = and_(Lead.first_response_at.is_(None), Lead.sla_due_at > now)
    rows = session.execute(
        select(
            key.label("key"),
            func.count(Lead.id),
            func.sum(case((on_time, 1), else_=0)),
            func.sum(case((late, 1), else_=0)),
            func.sum(case((missed, 1), else_=0)),
            func.sum(case((running, 1), else_=0)),
        )
        .where(in_week)
        .group_by(key)
    ).all()
    hours = hours_between(session, Lead.handed_at, Lead.first_response_at)
    found = []
    for value, n, ok, lt, miss, run in rows:
        ok, lt, miss = int(ok or 0), int(lt or 0), int(miss or 0)
        due = ok + lt + miss
        found.append(
            {
                "name": value,
                "leads": n,
                "on_time": ok,
                "late": lt,
                "missed": miss,
                "sla_running": int(run or 0),
                "due": due,
                "compliance": rate(ok, due),
                "median_hours_to_first_response": _median_hours(
                    session, hours, and_(in_week, responded, _group_key(key, value))
                ),
            }
        )
    return sorted(found, key=lambda g: (-g["leads"], g["name"] is None, g["name"] or ""))


def definition_in_force(session: Session) -> dict | None:
    """The newest version of the written definition (the one in force), or None."""
    row = definition_svc.current(session)
    if row is None:
        return None
    return {"version": row.version, "created_at": row.created_at.isoformat()}


def has_leads(session: Session, week: IsoWeek, tz: ZoneInfo) -> bool:
    """Was any lead handed over in ``week``?"""
    start, end = week.bounds(tz)
    found = session.scalar(
        select(Lead.id).where(Lead.handed_at >= start, Lead.handed_at < end).limit(1)
    )
    return found is not None


def compute(
    session: Session,
    *,
    week: IsoWeek,
    tz: ZoneInfo,
    now: datetime,
    rejection_alert: float = 0.30,
    min_sample: int = 10,
) -> dict:
    """Every figure of the Monday report for ``week`` (see the module doc), JSON-able.

    ``rejection_alert`` and ``min_sample`` (LEAD_REJECTION_ALERT, LEAD_MIN_SAMPLE) travel
    with the figures, for the builders."""
    start, end = week.bounds(tz)
    in_week = and_(Lead.handed_at >= start, Lead.handed_at < end)
    rep = func.coalesce(Lead.owner_user_id, Lead.owner_email)

    sources = status_counts(session, in_week, Lead.source)
    reasons = rejections_by_reason(session, in_week, Lead.source)
    for group in sources:
        group["rejected_by_reason"] = reasons.get(group["name"], {})
        group["rejection_rate"] = rate(group["rejected"], group["rated"])
        group["flagged"] = (
            group["rated"] >= min_sample
            and group["rejection_rate"] is not None
            and group["rejection_rate"] > rejection_alert
        )
    campaigns = status_counts(session, in_week, Lead.campaign)
    by_campaign_reason = rejections_by_reason(session, in_week, Lead.campaign)
    for group in campaigns:
        group["rejected_by_reason"] = by_campaign_reason.get(group["name"], {})

    def total(field: str) -> int:
        return sum(g[field] for g in sources)

    all_reasons: dict[str, int] = {}
    for group in sources:
        for why, n in group["rejected_by_reason"].items():
            all_reasons[why] = all_reasons.get(why, 0) + n
    sla_sources = sla_figures(session, in_week, Lead.source, now=now)
    sla_reps = sla_figures(session, in_week, rep, now=now)
    on_time = sum(g["on_time"] for g in sla_sources)
    due = sum(g["due"] for g in sla_sources)
    hours = hours_between(session, Lead.handed_at, Lead.first_response_at)
    rated = total("rated")
    return {
        "week": str(week),
        "week_start": week.monday.isoformat(),
        "week_end": week.sunday.isoformat(),
        "timezone": tz.key,
        "rejection_alert": rejection_alert,
        "min_sample": min_sample,
        "handed_over": total("handed_over"),
        "accepted": total("accepted"),
        "not_ready": total("not_ready"),
        "rejected": total("rejected"),
        "no_response": total("no_response"),
        "rated": rated,
        "rejection_rate": rate(total("rejected"), rated),
        "rejected_by_reason": dict(sorted(all_reasons.items(), key=lambda r: (-r[1], r[0]))),
        "by_source": sources,
        "by_campaign": campaigns,
        "flagged_sources": [g["name"] for g in sources if g["flagged"]],
        "sla": {
            "on_time": on_time,
            "due": due,
            "compliance": rate(on_time, due),
            "median_hours_to_first_response": _median_hours(
                session, hours, and_(in_week, Lead.first_response_at.is_not(None))
            ),
            "by_source": sla_sources,
            "by_rep": sla_reps,
        },
        "definition": definition_in_force(session),
        "names": display_names(session, {g["name"] for g in sla_reps if g["name"]}),
        "has_data": bool(sources),
    }
