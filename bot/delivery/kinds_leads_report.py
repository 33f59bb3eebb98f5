"""The Monday lead report's outbox kind (OutboxKind.LEAD_REPORT): its text and blocks are
stored with it when it is queued (a snapshot of the figures, like the digest); its delivery
records the report's ts. Registered by bot.delivery.kinds.register_all."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from bot.config import Settings
from bot.delivery.outbox import CHANNEL_SETUP_ERRORS, Delivered, Kind, Kinds
from bot.logs import event_on_commit
from bot.models import LeadReport, OutboxKind
from bot.services.outbox import Outgoing


def register(kinds: Kinds, settings: Settings) -> None:
    """Add the lead report's kind to ``kinds``."""

    def report_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        row = session.get(LeadReport, m.subject_id)
        if row is not None:
            row.ts, row.channel, row.posted_at = d.ts, d.channel, now
            week = f"{row.week_start:%G-W%V}"
            event_on_commit(
                session,
                "lead_report_posted",
                f"lead report for {week} posted in {d.channel}",
                week=week,
                channel=d.channel,
                ts=d.ts,
            )

    # not in the channel yet: retried with the usual backoff until an admin invites the bot
    kinds.add(OutboxKind.LEAD_REPORT, Kind(sent=report_sent, keep_trying=CHANNEL_SETUP_ERRORS))
