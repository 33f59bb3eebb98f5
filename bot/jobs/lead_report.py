"""The Monday lead report: computed, rendered and queued once per week, on schedule
(LEAD_REPORT_SCHEDULE, in LEAD_REPORT_TIMEZONE) or on demand (``closeloop leads report
--post``), to LEAD_REPORT_CHANNEL (marketing's channel unless set)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.blocks import lead_report as report_blocks
from bot.db import session_scope
from bot.models import LeadReport
from bot.runtime import Runtime
from bot.services import installation, outgoing
from bot.services import lead_report as report_svc
from bot.services.calendar import local_instant
from bot.services.lead_report import IsoWeek

log = logging.getLogger(__name__)


def zone_of(rt: Runtime) -> ZoneInfo:
    return ZoneInfo(rt.settings.leads.report_timezone)


def channel_of(rt: Runtime) -> str:
    return rt.settings.leads.report_channel


def compute(rt: Runtime, session: Session, week: IsoWeek, now: datetime) -> dict:
    leads = rt.settings.leads
    return report_svc.compute(
        session,
        week=week,
        tz=zone_of(rt),
        now=now,
        rejection_alert=leads.rejection_alert,
        min_sample=leads.min_sample,
    )


def figures(rt: Runtime, week: IsoWeek) -> dict:
    with session_scope(rt.session_factory) as session:
        return compute(rt, session, week, rt.now())


def default_week(rt: Runtime) -> IsoWeek:
    """The week a report made now covers: the last whole week (the one before this)."""
    return IsoWeek.containing(rt.now(), zone_of(rt)).previous()


def scheduled_at(rt: Runtime, week: IsoWeek) -> datetime:
    """When the report on ``week`` is due: LEAD_REPORT_SCHEDULE in the week after it."""
    when = rt.settings.leads.report_schedule
    day = week.monday + timedelta(days=7 + when.weekday)
    return local_instant(day, when.at, zone_of(rt))


def queue(rt: Runtime, week: IsoWeek) -> bool:
    """Queue ``week``'s report, once ever (the unique week row); False when it was."""
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        row = LeadReport(week_start=week.monday, created_at=now, channel=channel_of(rt))
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            return False
        text, blocks = report_blocks.report_message(compute(rt, session, week, now))
        outgoing.lead_report(session, row, text=text, blocks=blocks, now=now)
    return True


def posted_ts(rt: Runtime, week: IsoWeek) -> str | None:
    """The report's ts in Slack, once it is posted."""
    with session_scope(rt.session_factory) as session:
        return session.scalar(select(LeadReport.ts).where(LeadReport.week_start == week.monday))


def queued_before(rt: Runtime, week: IsoWeek) -> bool:
    """True when ``week``'s report was queued (or posted) already: ``queue`` would not."""
    with session_scope(rt.session_factory) as session:
        found = session.scalar(select(LeadReport.id).where(LeadReport.week_start == week.monday))
        return found is not None


def post_due_report(rt: Runtime) -> bool:
    """The tick's step: last week's report, from LEAD_REPORT_SCHEDULE on.

    A bot that was down then posts it when it comes back; the unique week row makes it once
    across restarts and processes. Not posted: a week in which no lead was handed over (an
    installation that does not use the lead loop hears nothing of it), and a week that ended
    before the installation began (its first tick)."""
    week = default_week(rt)
    now = rt.now()
    if now < scheduled_at(rt, week):
        return False
    with session_scope(rt.session_factory) as session:
        if session.scalar(select(LeadReport.id).where(LeadReport.week_start == week.monday)):
            return False  # the minute tick's usual case, answered without a write
        if not report_svc.has_leads(session, week, zone_of(rt)):
            return False
        began = installation.record_start(session, now=now)
    if week.bounds(zone_of(rt))[1] <= began:
        return False
    return queue(rt, week)
