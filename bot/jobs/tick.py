"""The scheduler's minute tick: everything time-driven, idempotent and safe to run often."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.db import session_scope
from bot.event_inbox import EventInbox
from bot.intake import deliveries
from bot.jobs import deals, definition, digest, lead_report, leads, prompts
from bot.jobs.roster import RosterSync
from bot.runtime import Runtime
from bot.services import installation
from bot.services.outbox import committed_keys

log = logging.getLogger(__name__)


def record_start(rt: Runtime) -> None:
    """The installation began with its first tick: nothing scheduled reaches back before it
    (a prompt whose time had passed, the digest of a month that had ended). The first tick,
    not ``closeloop migrate``, because every command migrates and a release step may migrate
    days before the bot first runs (bot.services.installation)."""
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        if installation.started_at(session) is not None:
            return
        if installation.record_start(session, now=now) != now:
            return  # another process's first tick got there first
    log.info(
        "first start of this installation: prompts and digests are scheduled from now on; "
        "`closeloop prompt --now` sends this week's prompt at once"
    )


class Tick:
    """One process's tick (it keeps when the sales roster was last read from Slack)."""

    def __init__(self, rt: Runtime, events: EventInbox) -> None:
        self.rt = rt
        self.roster = RosterSync(rt)
        self.steps: tuple[tuple[str, Callable[[], object]], ...] = (
            ("installation start", lambda: record_start(rt)),
            ("events", events.replay),
            ("crm deliveries", lambda: deliveries.process_due(rt)),
            ("crm sync", lambda: deliveries.sync_due(rt)),  # once a day
            ("deal owners", lambda: deals.process_pending_deals(rt)),
            ("deal reminders", lambda: deals.queue_deal_reminders(rt)),
            ("overdue deals", lambda: deals.escalate_overdue(rt)),
            ("lead owners", lambda: leads.process_pending_leads(rt)),
            ("lead reminders", lambda: leads.queue_lead_reminders(rt)),
            ("overdue leads", lambda: leads.escalate_overdue_leads(rt)),
            ("prompts", lambda: prompts.prompts_step(rt, self.roster)),
            ("reminders", lambda: prompts.queue_reminders(rt)),
            ("missed weeks", lambda: prompts.close_missed_weeks(rt)),
            ("event memory", events.forget_old),
            ("monthly digest", lambda: digest.post_due_digest(rt)),
            ("lead report", lambda: lead_report.post_due_report(rt)),
            ("definition review", lambda: definition.ask_due_review(rt)),
            ("outbox", rt.outbox.drain),  # sends only while this process has the role
        )

    def __call__(self) -> None:
        for name, step in self.steps:
            committed_keys()  # what a step queued is the outbox step's (or the poll's) to send
            self.rt.after_ack.foreground.wait_idle()  # yields to Slack's requests, as work
            try:  # after an ack does
                step()
            except Exception:  # one failing step must not stop the others
                log.exception("scheduled step %r failed", name)
