"""The definition's messages (bot.services.definition enqueues them): a channel told of a
new version, and an owner's review DM (posted, then edited once the review is answered).
Registered by bot.delivery.kinds.register_all."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from bot.blocks import definition as def_blocks
from bot.config import Settings
from bot.delivery.outbox import CHANNEL_SETUP_ERRORS, Kind, Kinds, Wait, rendered
from bot.models import DefinitionReview, LeadDefinition, Op, OutboxKind, OutboxState
from bot.services import definition as definition_svc
from bot.services.definition import Period
from bot.services.outbox import Outgoing


def register(kinds: Kinds, settings: Settings) -> None:
    tz = ZoneInfo(settings.digest_timezone)
    months = settings.leads.review_months

    def changed(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        defn = session.get(LeadDefinition, m.subject_id)
        if defn is None:
            return None
        text, blocks = def_blocks.changed_notice(
            version=defn.version,
            summary=defn.summary,
            note=defn.note,
            author=defn.author,
            created_at=defn.created_at,
        )
        return rendered(m, text=text, blocks=blocks)

    def review(session: Session, m: Outgoing, now: datetime) -> Outgoing | Wait | None:
        row = session.get(DefinitionReview, m.subject_id)
        if row is None:
            return None
        changes: dict = {}
        if m.op == Op.UPDATE:  # the DM brought up to date: answered
            state = definition_svc.post_state(session, row.id, m.channel)
            if state in (None, OutboxState.FAILED, OutboxState.DROPPED):
                return None  # never posted: nothing to edit
            where = definition_svc.review_message_of(session, row.id, m.channel)
            if where is None:
                return Wait()  # edited once it is posted
            changes = {"channel": where[0], "ts": where[1]}
        period = Period.parse(row.period, months)
        figures: dict = {"handed": 0, "rated": 0, "rejected": 0, "rate": None, "reasons": []}
        figures |= {"sources": [], "min_sample": settings.leads.min_sample}
        if period is not None:
            start, end = period.bounds(tz)
            figures = definition_svc.rejection_figures(
                session, start=start, end=end, min_sample=settings.leads.min_sample
            )
        latest = definition_svc.current(session)
        text, blocks = def_blocks.review_dm(
            period=row.period,
            version=latest.version if latest is not None else None,
            figures=figures,
            reviewed_by=row.reviewed_by,
            reviewed_at=row.reviewed_at,
            outcome=row.outcome,
        )
        return rendered(m, text=text, blocks=blocks, **changes)

    kinds.add(OutboxKind.DEFINITION_CHANGED, Kind(render=changed, keep_trying=CHANNEL_SETUP_ERRORS))
    kinds.add(OutboxKind.DEFINITION_REVIEW, Kind(render=review))
