"""Leads handed to sales: received (a CRM, the generic hook, /lead), their owner found in
Slack and asked to rate them, reminded before the SLA runs out, escalated when it does."""

from __future__ import annotations

import logging

from bot.db import session_scope
from bot.models import LeadStatus
from bot.runtime import Runtime
from bot.services import leads as lead_svc
from bot.services import outbox as outbox_svc
from bot.services.leads import LeadIn
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)

MAX_OWNER_LOOKUPS = 5


def receive_lead(rt: Runtime, lead: LeadIn, *, origin: str) -> tuple[int, bool]:
    """Store a lead (once per external ID); return its pk and whether it is new."""
    with session_scope(rt.session_factory) as session:
        row, created = lead_svc.receive_lead(
            session,
            lead=lead,
            s=rt.settings.leads,
            default_tz=rt.settings.default_timezone,
            now=rt.now(),
            origin=origin,
        )
        session.flush()
        return row.id, created


def process_lead(rt: Runtime, lead_pk: int) -> None:
    """Find the owner in Slack and queue their DM (or the managers' "owner missing"), once.

    Claimed in the database (one process, one lookup). After MAX_OWNER_LOOKUPS failed
    lookups, or when Slack has no such person, the managers are told: a lead never waits
    silently. Raises nothing for a Slack failure: a later tick looks again.
    """
    now = rt.now()
    s = rt.settings
    with session_scope(rt.session_factory) as session:
        lead = lead_svc.get_lead(session, lead_pk)
        if lead.status != LeadStatus.NEW or lead.nudge_ts is not None:
            return
        if outbox_svc.exists(session, f"lead-nudge:{lead_pk}") or outbox_svc.exists(
            session, f"lead-owner-missing:{lead_pk}"
        ):
            return  # queued already: the outbox sends it (and retries it)
        if not lead_svc.claim_nudge(session, lead=lead, now=now):
            return
        owner, email, attempts = lead.owner_user_id, lead.owner_email, lead.nudge_attempts
    try:
        found = rt.directory.active_user(user_id=owner, email=email)
    except SLACK_ERRORS:
        log.exception("looking up the owner of lead %s failed", lead_pk)
        if attempts < MAX_OWNER_LOOKUPS:
            return
        found = None
    with session_scope(rt.session_factory) as session:
        lead = lead_svc.get_lead(session, lead_pk)
        if found is None:
            lead_svc.owner_missing(session, lead, channel=s.leads.escalation_channel, now=now)
            return
        lead_svc.owner_found(
            session, lead, owner=found, s=s.leads, default_tz=s.default_timezone, now=now
        )


def nudge_new_lead(rt: Runtime, lead_pk: int) -> None:
    """A lead just arrived: queue its owner's DM and have it sent soon."""
    process_lead(rt, lead_pk)
    rt.send_soon()


def process_pending_leads(rt: Runtime) -> int:
    """The tick's step: owners not looked up yet (new leads, earlier Slack failures)."""
    with session_scope(rt.session_factory) as session:
        ids = [lead.id for lead in lead_svc.leads_needing_owner_or_nudge(session, now=rt.now())]
    for lead_pk in ids:
        process_lead(rt, lead_pk)
    return len(ids)


def queue_lead_reminders(rt: Runtime) -> int:
    """The tick's step: one reminder at LEAD_REMINDER_HOURS after the hand-off."""
    now = rt.now()
    s = rt.settings
    with session_scope(rt.session_factory) as session:
        due = lead_svc.due_reminders(session, now=now, s=s.leads, default_tz=s.default_timezone)
        return sum(lead_svc.claim_reminder(session, lead=lead, now=now) for lead in due)


def escalate_overdue_leads(rt: Runtime) -> int:
    """The tick's step: leads past the SLA unrated are escalated to the sales managers."""
    with session_scope(rt.session_factory) as session:
        return len(
            lead_svc.escalate_overdue(
                session, channel=rt.settings.leads.escalation_channel, now=rt.now()
            )
        )
