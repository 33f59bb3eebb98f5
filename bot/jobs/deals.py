"""Closed deals: received (from the CRM webhook, the CLI or an import), their owner found in
Slack and asked for the win/loss entry, reminded, escalated when overdue."""

from __future__ import annotations

import logging

from bot.db import session_scope
from bot.runtime import Runtime
from bot.services import outbox as outbox_svc
from bot.services import outgoing
from bot.services import winloss as wl_svc
from bot.services.deal_input import DealIn
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)

MAX_OWNER_LOOKUPS = 5


def receive_deal(rt: Runtime, deal: DealIn, *, origin: str = "crm") -> tuple[int, bool]:
    """Store a closed deal (once per CRM ID); return its pk and whether it is new."""
    with session_scope(rt.session_factory) as session:
        row, created = wl_svc.receive_deal(
            session,
            deal=deal,
            deadline_hours=rt.settings.winloss_deadline_hours,
            now=rt.now(),
            origin=origin,
        )
        session.flush()
        return row.id, created


def process_deal(rt: Runtime, deal_pk: int) -> None:
    """Find the owner in Slack and queue their nudge (or the managers' "owner missing"), once.

    Claimed in the database (one process, one owner lookup). After MAX_OWNER_LOOKUPS failed
    lookups, or when Slack has no such person, the managers are told, so a deal never waits
    silently. Raises nothing for a Slack failure: a later tick looks again.
    """
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        deal = wl_svc.get_deal(session, deal_pk)
        if deal.entry is not None or deal.nudge_ts is not None:
            return
        if outbox_svc.exists(session, f"deal-nudge:{deal_pk}") or outbox_svc.exists(
            session, f"owner-missing:{deal_pk}"
        ):
            return  # queued already: the outbox sends it (and retries it)
        if not wl_svc.claim_nudge(session, deal=deal, now=now):
            return
        owner, email, attempts = deal.owner_user_id, deal.owner_email, deal.nudge_attempts
    try:
        found = rt.directory.active_user(user_id=owner, email=email)
    except SLACK_ERRORS:
        log.exception("looking up the owner of deal %s failed", deal_pk)
        if attempts < MAX_OWNER_LOOKUPS:
            return
        found = None
    with session_scope(rt.session_factory) as session:
        deal = wl_svc.get_deal(session, deal_pk)
        if found is None:
            outgoing.owner_missing(
                session, deal, channel=rt.settings.winloss_escalation_channel, now=now
            )
            return
        deal.owner_user_id = found
        outgoing.deal_nudge(session, deal, owner=found, now=now)


def nudge_new_deal(rt: Runtime, deal_pk: int) -> None:
    """A deal just arrived: queue its owner's nudge and have it sent soon."""
    process_deal(rt, deal_pk)
    rt.send_soon()


def nudge_sent(rt: Runtime, deal_pk: int) -> bool:
    with session_scope(rt.session_factory) as session:
        return wl_svc.get_deal(session, deal_pk).nudge_ts is not None


def process_pending_deals(rt: Runtime) -> int:
    """The tick's step: owners not looked up yet (new deals, earlier Slack failures)."""
    with session_scope(rt.session_factory) as session:
        ids = [d.id for d in wl_svc.deals_needing_owner_or_nudge(session, now=rt.now())]
    for deal_pk in ids:
        process_deal(rt, deal_pk)
    return len(ids)


def queue_deal_reminders(rt: Runtime) -> int:
    """The tick's step: one reminder at hour WINLOSS_REMINDER_HOURS after close."""
    now = rt.now()
    s = rt.settings
    with session_scope(rt.session_factory) as session:
        due = wl_svc.due_deal_reminders(
            session,
            now=now,
            reminder_hours=s.winloss_reminder_hours,
            deadline_hours=s.winloss_deadline_hours,
        )
        return sum(wl_svc.claim_deal_reminder(session, deal=deal, now=now) for deal in due)


def escalate_overdue(rt: Runtime) -> int:
    """The tick's step: deals past the deadline without an entry are marked overdue, and
    the managers told, with a button to log it."""
    with session_scope(rt.session_factory) as session:
        return len(
            wl_svc.mark_overdue(
                session,
                escalation_channel=rt.settings.winloss_escalation_channel,
                now=rt.now(),
            )
        )
