"""The lead hand-off loop's messages (bot.delivery.kinds registers them): the owner's DM, its
reminder and its rated version, and the sales managers' escalations. Each is rendered from the
database as it is when it is sent: a lead rated meanwhile is not chased."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from bot.blocks import leads as lead_blocks
from bot.blocks.elements import escape, mention
from bot.blocks.winloss import local_time
from bot.config import Settings
from bot.delivery.outbox import CHANNEL_SETUP_ERRORS, Delivered, Kind, Kinds, rendered
from bot.models import Lead, LeadDefinition, LeadStatus, Member, OutboxKind, is_forgotten
from bot.services import leads as lead_svc
from bot.services.outbox import Outgoing


def lead_view(session: Session, lead: Lead) -> lead_blocks.LeadView:
    """What a message shows of ``lead``, with the definition it was handed over under."""
    definition = (
        session.get(LeadDefinition, lead.definition_version)
        if lead.definition_version is not None
        else None
    )
    return lead_blocks.LeadView(
        pk=lead.id,
        person=lead.person,
        company=lead.company,
        title=lead.title,
        email=lead.email,
        source=lead.source,
        campaign=lead.campaign,
        context=lead.context,
        handed_by=lead.handed_by,
        definition_version=definition.version if definition else None,
        definition_summary=definition.summary if definition else None,
    )


def rating_view(
    session: Session, lead: Lead, *, default_tz: str, now: datetime
) -> lead_blocks.RatingView | None:
    latest = lead_svc.latest_rating(lead)
    if latest is None:
        return None
    tz = lead_svc.owner_zone(session, lead.owner_user_id, default_tz)
    until = lead_svc.may_change_until(lead)
    return lead_blocks.RatingView(
        rating=latest.rating,
        reason=latest.reason,
        note=latest.note,
        rated_by=latest.rated_by,
        rated_at=local_time(latest.rated_at, tz),
        late=lead.first_response_at is not None and lead.first_response_at > lead.sla_due_at,
        can_change_until=local_time(until, tz) if until is not None and until > now else None,
    )


def owner_name(session: Session, lead: Lead) -> str:
    """The owner named without a mention (an escalation pings nobody)."""
    if lead.owner_user_id and is_forgotten(lead.owner_user_id):
        return mention(lead.owner_user_id)
    member = session.get(Member, lead.owner_user_id) if lead.owner_user_id else None
    name = (member.name if member else None) or lead.owner_email or lead.owner_user_id
    return escape(name or "unknown owner")


def register(kinds: Kinds, settings: Settings) -> None:
    s = settings.leads

    def waiting(session: Session, m: Outgoing) -> Lead | None:
        lead = session.get(Lead, m.subject_id)
        return lead if lead is not None and lead.status == LeadStatus.NEW else None

    def with_content(m: Outgoing, content: tuple[str, list[dict]]) -> Outgoing:
        text, blocks = content
        return rendered(m, text=text, blocks=blocks)

    def nudge(session: Session, m: Outgoing, now: datetime, *, reminder: bool = False):
        lead = waiting(session, m)
        if lead is None or (reminder and lead.escalated_at is not None):
            return None
        tz = lead_svc.owner_zone(session, m.channel, settings.default_timezone)
        content = lead_blocks.lead_dm(
            lead_view(session, lead), due=local_time(lead.sla_due_at, tz), reminder=reminder
        )
        return with_content(m, content)

    def reminder(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        return nudge(session, m, now, reminder=True)

    def nudge_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        lead = session.get(Lead, m.subject_id)
        if lead is not None:
            lead.nudge_channel, lead.nudge_ts = d.channel, d.ts
            if lead.status != LeadStatus.NEW:  # rated (from the escalation) on its way
                lead_svc.rated_dm(session, lead, now=now)

    def nudge_refused(session: Session, m: Outgoing, error: str, now: datetime) -> None:
        lead = session.get(Lead, m.subject_id)
        if lead is not None:  # the managers are told; a lead never waits silently
            lead_svc.owner_missing(session, lead, channel=s.escalation_channel, now=now)

    def rated(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        lead = session.get(Lead, m.subject_id)
        if lead is None:
            return None
        view = rating_view(session, lead, default_tz=settings.default_timezone, now=now)
        if view is None:
            return None
        return with_content(m, lead_blocks.rated_dm(lead_view(session, lead), view))

    def owner_missing(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        lead = waiting(session, m)
        if lead is None:
            return None
        owner = escape(lead.owner_email or lead.owner_user_id or "unknown")
        return with_content(m, lead_blocks.owner_missing(lead_view(session, lead), owner=owner))

    def owner_missing_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        lead = session.get(Lead, m.subject_id)
        if lead is not None:
            lead.owner_missing_reported_at = now

    def overdue(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        lead = waiting(session, m)
        if lead is None:
            return None
        content = lead_blocks.escalation(
            lead_view(session, lead), owner=owner_name(session, lead), hours=s.sla_hours
        )
        return with_content(m, content)

    def handed(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        lead = session.get(Lead, m.subject_id)
        if lead is None or lead.owner_user_id is None:
            return None
        tz = lead_svc.owner_zone(session, m.channel, settings.default_timezone)
        text = lead_blocks.handed_off(
            person=lead.person, owner=lead.owner_user_id, due=local_time(lead.sla_due_at, tz)
        )
        return rendered(m, text=text, blocks=None)

    kinds.add(OutboxKind.LEAD_HANDED, Kind(render=handed))
    kinds.add(OutboxKind.LEAD_NUDGE, Kind(render=nudge, sent=nudge_sent, refused=nudge_refused))
    kinds.add(OutboxKind.LEAD_REMINDER, Kind(render=reminder))
    kinds.add(OutboxKind.LEAD_RATED, Kind(render=rated))
    kinds.add(
        OutboxKind.LEAD_OWNER_MISSING,
        Kind(render=owner_missing, sent=owner_missing_sent, keep_trying=CHANNEL_SETUP_ERRORS),
    )
    kinds.add(OutboxKind.LEAD_OVERDUE, Kind(render=overdue, keep_trying=CHANNEL_SETUP_ERRORS))
