"""The lead hand-off loop: leads marketing hands to sales, received once, their owner asked to
rate them within the SLA, reminded, escalated; ratings (accept, not ready, reject with a
reason from the taxonomy), changeable for 7 days, every one kept.

Who may do what is decided here, not in the listeners: only marketing hands a lead off from
Slack (:func:`check_may_hand_off`), only the owner or a sales manager rates it
(:func:`check_may_rate`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.config_leads import RATING_CHANGE_DAYS, LeadSettings, WorkingHours
from bot.logs import event_on_commit
from bot.models import (
    LEAD_RATINGS,
    Lead,
    LeadRating,
    LeadStatus,
    Member,
    Op,
    OutboxKind,
)
from bot.services import definition as definition_svc
from bot.services import outbox, outgoing
from bot.services.calendar import zone
from bot.services.deal_input import InvalidField, field_with_nul, parse_instant
from bot.services.errors import DomainError, NotAllowed

NUDGE_RETRY_AFTER = timedelta(minutes=2)
MAX_NOTE = 1000
MAX_CONTEXT = 3000
IMPORTED = "import"  # a lead loaded as history (closeloop import leads): never chased
HANDED_AT_PAST = timedelta(days=30)  # a hand-off older than this is history: use the import
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# --- what arrives -------------------------------------------------------------------------


@dataclass(frozen=True)
class LeadIn:
    """A lead as marketing hands it over (a CRM, the generic hook, /lead, an import)."""

    external_id: str | None
    person: str
    owner_user_id: str | None = None
    owner_email: str | None = None
    email: str | None = None
    company: str | None = None
    title: str | None = None
    source: str | None = None
    campaign: str | None = None
    context: str | None = None
    handed_at: datetime | None = None  # None: now
    handed_by: str | None = None


def _text(data: Mapping[str, object], name: str, *, limit: int = 255) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidField(name, "must be a string")
    text = str(value).strip()
    if len(text) > limit:
        raise InvalidField(name, f"must be at most {limit} characters")
    return text or None


def parse_lead(data: Mapping[str, object], *, now: datetime) -> LeadIn:
    """Validate the generic lead hook's JSON object; InvalidField names the first bad field.

    ``lead_id`` (the sender's ID, for deduplication), ``name``, ``owner_email`` or
    ``owner_slack_id``; optional ``email``, ``company``, ``title``, ``source``, ``campaign``,
    ``context`` (what marketing knows) and ``handed_at`` (ISO 8601; default: now).
    """
    if not isinstance(data, Mapping):
        raise InvalidField("body", "must be a JSON object")
    nul = field_with_nul(data)
    if nul is not None:
        raise InvalidField(nul, "contains a NUL character (\\u0000)")
    lead_id = _text(data, "lead_id", limit=150)
    if lead_id is None:
        raise InvalidField("lead_id", "is required (your system's ID for this lead)")
    person = _text(data, "name")
    if person is None:
        raise InvalidField("name", "is required (the person marketing hands over)")
    slack_id = _text(data, "owner_slack_id", limit=32)
    owner_email = _text(data, "owner_email")
    if slack_id is None and owner_email is None:
        raise InvalidField("owner_email", "or owner_slack_id is required")
    if slack_id is not None and not _USER_ID.match(slack_id):
        raise InvalidField("owner_slack_id", f"must be a Slack user ID (U...), not {slack_id!r}")
    if owner_email is not None and not EMAIL.match(owner_email):
        raise InvalidField("owner_email", f"is not an email address: {owner_email!r}")
    email = _text(data, "email")
    if email is not None and not EMAIL.match(email):
        raise InvalidField("email", f"is not an email address: {email!r}")
    handed_at = None
    if data.get("handed_at") is not None:
        handed_at, _ = parse_instant(data.get("handed_at"), "handed_at")
        if handed_at > now + timedelta(minutes=5):
            raise InvalidField("handed_at", "is in the future")
        if handed_at < now - HANDED_AT_PAST:
            raise InvalidField(
                "handed_at", "is more than 30 days ago: load history with closeloop import leads"
            )
    return LeadIn(
        external_id=f"generic:{lead_id}",
        person=person,
        owner_user_id=slack_id,
        owner_email=owner_email.lower() if owner_email else None,
        email=email.lower() if email else None,
        company=_text(data, "company"),
        title=_text(data, "title"),
        source=_text(data, "source"),
        campaign=_text(data, "campaign"),
        context=_text(data, "context", limit=MAX_CONTEXT),
        handed_at=handed_at,
    )


# --- the SLA ------------------------------------------------------------------------------


def sla_deadline(
    start: datetime, *, hours: float, working: WorkingHours | None, tz: ZoneInfo
) -> datetime:
    """``hours`` after ``start``; with working hours, only the hours inside them count (in
    ``tz``, the owner's time zone): a lead handed over on Friday evening is due on Monday."""
    if working is None:
        return start + timedelta(hours=hours)
    remaining = timedelta(hours=hours)
    cursor = start.astimezone(tz)
    for _ in range(366 * 2):  # a year of days at most (one working day a week, 336 hours)
        day = cursor.date()
        if day.weekday() in working.days:
            opens = datetime.combine(day, working.start, tz)
            closes = datetime.combine(day, working.end, tz)
            begin = max(cursor, opens)
            if begin < closes:
                available = closes.astimezone(UTC) - begin.astimezone(UTC)
                if remaining <= available:
                    return (begin.astimezone(UTC) + remaining).astimezone(UTC)
                remaining -= available
        cursor = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz)
    raise ValueError("working hours leave no time to count the SLA in")


def owner_zone(session: Session, user_id: str | None, default: str) -> ZoneInfo:
    member = session.get(Member, user_id) if user_id else None
    return zone(member.tz if member else None, default)


def due_at(session: Session, lead: Lead, *, s: LeadSettings, default_tz: str) -> datetime:
    """When the lead must be rated: LEAD_SLA_HOURS after hand-off (in working hours)."""
    tz = owner_zone(session, lead.owner_user_id, default_tz)
    return sla_deadline(lead.handed_at, hours=s.sla_hours, working=s.working_hours, tz=tz)


def reminder_at(session: Session, lead: Lead, *, s: LeadSettings, default_tz: str) -> datetime:
    tz = owner_zone(session, lead.owner_user_id, default_tz)
    return sla_deadline(lead.handed_at, hours=s.reminder_hours, working=s.working_hours, tz=tz)


# --- receiving ----------------------------------------------------------------------------


def receive_lead(
    session: Session,
    *,
    lead: LeadIn,
    s: LeadSettings,
    default_tz: str,
    now: datetime,
    origin: str,
) -> tuple[Lead, bool]:
    """Store a lead once per external ID; return it and whether it is new."""
    if lead.external_id is not None:
        existing = session.scalars(select(Lead).where(Lead.external_id == lead.external_id)).first()
        if existing is not None:
            return existing, False
    definition = definition_svc.current(session)
    row = Lead(
        external_id=lead.external_id,
        origin=origin,
        person=lead.person,
        email=lead.email,
        company=lead.company,
        title=lead.title,
        source=lead.source,
        campaign=lead.campaign,
        context=lead.context,
        owner_user_id=lead.owner_user_id,
        owner_email=lead.owner_email,
        handed_by=lead.handed_by,
        handed_at=lead.handed_at or now,
        received_at=now,
        definition_version=definition.version if definition else None,
        status=LeadStatus.NEW,
    )
    row.sla_due_at = due_at(session, row, s=s, default_tz=default_tz)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # the same lead arriving twice at once
        found = session.scalars(select(Lead).where(Lead.external_id == lead.external_id)).one()
        return found, False
    event_on_commit(
        session,
        "lead_received",
        f"lead {row.id} ({lead.external_id or 'slack'}) received from {origin}",
        lead_id=row.id,
        external_id=lead.external_id,
        origin=origin,
        source=lead.source,
    )
    return row, True


def get_lead(session: Session, lead_pk: int) -> Lead:
    lead = session.get(Lead, lead_pk)
    if lead is None:
        raise DomainError("That lead no longer exists.")
    return lead


def hand_off(
    session: Session,
    *,
    lead: LeadIn,
    by: str,
    marketing_ids: Collection[str],
    s: LeadSettings,
    default_tz: str,
    now: datetime,
) -> Lead:
    """A lead handed over in Slack (/lead): only marketing may; stored once (per modal), and
    the marketer told who was asked and by when."""
    check_may_hand_off(by, marketing_ids)
    row, _ = receive_lead(session, lead=lead, s=s, default_tz=default_tz, now=now, origin="slack")
    session.flush()
    outbox.enqueue(
        session,
        key=f"lead-handed:{row.id}",
        kind=OutboxKind.LEAD_HANDED,
        channel=by,
        subject_id=row.id,
        now=now,
    )
    return row


def check_may_hand_off(user_id: str, marketing_ids: Collection[str]) -> None:
    """Only marketing hands a lead to sales."""
    if user_id not in marketing_ids:
        raise NotAllowed(
            "Only the marketing team can hand a lead to sales. If you should be able to, "
            "ask an admin to add you to the marketing group."
        )


# --- asking the owner ---------------------------------------------------------------------


def leads_needing_owner_or_nudge(session: Session, *, now: datetime) -> list[Lead]:
    """Unrated leads whose owner was not resolved or whose DM has not gone out."""
    stale = now - NUDGE_RETRY_AFTER
    return list(
        session.scalars(
            select(Lead)
            .where(
                Lead.status == LeadStatus.NEW,
                Lead.origin != IMPORTED,
                Lead.nudge_ts.is_(None),
                Lead.owner_missing_reported_at.is_(None),
                or_(Lead.nudge_claimed_at.is_(None), Lead.nudge_claimed_at < stale),
            )
            .order_by(Lead.id)
            .limit(500)
        )
    )


def claim_nudge(session: Session, *, lead: Lead, now: datetime) -> bool:
    """Take the owner lookup and DM for this lead (one process, one DM)."""
    stale = now - NUDGE_RETRY_AFTER
    result = session.execute(
        update(Lead)
        .where(
            Lead.id == lead.id,
            Lead.nudge_ts.is_(None),
            or_(Lead.nudge_claimed_at.is_(None), Lead.nudge_claimed_at < stale),
        )
        .values(nudge_claimed_at=now, nudge_attempts=Lead.nudge_attempts + 1)
    )
    return cast(CursorResult, result).rowcount == 1


def owner_found(
    session: Session, lead: Lead, *, owner: str, s: LeadSettings, default_tz: str, now: datetime
) -> None:
    """The owner is this Slack user: the SLA is counted in their time zone; their DM queued."""
    lead.owner_user_id = owner
    if s.working_hours is not None:
        lead.sla_due_at = due_at(session, lead, s=s, default_tz=default_tz)
    outbox.enqueue(
        session,
        key=f"lead-nudge:{lead.id}",
        kind=OutboxKind.LEAD_NUDGE,
        channel=owner,
        subject_id=lead.id,
        now=now,
    )


def owner_missing(session: Session, lead: Lead, *, channel: str, now: datetime) -> bool:
    """The managers told the lead's owner is not in Slack (so it never waits silently)."""
    return outbox.enqueue(
        session,
        key=f"lead-owner-missing:{lead.id}",
        kind=OutboxKind.LEAD_OWNER_MISSING,
        channel=channel,
        subject_id=lead.id,
        now=now,
    )


def due_reminders(
    session: Session, *, now: datetime, s: LeadSettings, default_tz: str
) -> list[Lead]:
    """Unrated leads whose DM went out, at their reminder time, not reminded yet. A lead
    that arrived after that time gets none: its DM came later than a reminder would."""
    rows = session.scalars(
        select(Lead).where(
            Lead.status == LeadStatus.NEW,
            Lead.nudge_ts.is_not(None),
            Lead.reminded_at.is_(None),
            Lead.escalated_at.is_(None),
            Lead.sla_due_at > now,
        )
    ).all()
    due = []
    for lead in rows:
        at = reminder_at(session, lead, s=s, default_tz=default_tz)
        if at <= now and lead.received_at < at:
            due.append(lead)
    return due


def claim_reminder(session: Session, *, lead: Lead, now: datetime) -> bool:
    """Queue the lead's one reminder; False when another run already did."""
    result = session.execute(
        update(Lead)
        .where(Lead.id == lead.id, Lead.reminded_at.is_(None), Lead.status == LeadStatus.NEW)
        .values(reminded_at=now)
    )
    if cast(CursorResult, result).rowcount != 1:
        return False
    outbox.enqueue(
        session,
        key=f"lead-reminder:{lead.id}",
        kind=OutboxKind.LEAD_REMINDER,
        channel=lead.owner_user_id or "",
        subject_id=lead.id,
        expires_at=lead.sla_due_at,
        now=now,
    )
    return True


def escalate_overdue(session: Session, *, channel: str, now: datetime) -> list[Lead]:
    """Leads past their SLA unrated, marked escalated exactly once, the managers' message
    queued. The breach stays recorded: ``escalated_at``, and ``first_response_at`` when
    the owner rates it later."""
    candidates = session.scalars(
        select(Lead)
        .where(
            Lead.status == LeadStatus.NEW,
            Lead.origin != IMPORTED,
            Lead.escalated_at.is_(None),
            Lead.sla_due_at <= now,
        )
        .order_by(Lead.id)
        .limit(500)
    ).all()
    marked = []
    for lead in candidates:
        result = session.execute(
            update(Lead)
            .where(Lead.id == lead.id, Lead.escalated_at.is_(None), Lead.status == LeadStatus.NEW)
            .values(escalated_at=now)
        )
        if cast(CursorResult, result).rowcount == 1:
            lead.escalated_at = now
            outbox.enqueue(
                session,
                key=f"lead-overdue:{lead.id}",
                kind=OutboxKind.LEAD_OVERDUE,
                channel=channel,
                subject_id=lead.id,
                now=now,
            )
            marked.append(lead)
    return marked


# --- rating -------------------------------------------------------------------------------


def check_may_rate(lead: Lead, *, user_id: str, managers: Collection[str]) -> None:
    """Only the lead's owner or a sales manager rates it."""
    if user_id in managers or (lead.owner_user_id and lead.owner_user_id == user_id):
        return
    raise NotAllowed("Only the lead's owner or a sales manager can rate this lead.")


def latest_rating(lead: Lead) -> LeadRating | None:
    return lead.ratings[-1] if lead.ratings else None


def may_change_until(lead: Lead) -> datetime | None:
    """Until when the lead's rating may still be changed (None: not rated yet)."""
    first = lead.ratings[0] if lead.ratings else None
    return first.rated_at + timedelta(days=RATING_CHANGE_DAYS) if first else None


def rate(
    session: Session,
    *,
    lead_pk: int,
    rating: str,
    user_id: str,
    managers: Collection[str],
    reasons: Sequence[str],
    now: datetime,
    reason: str | None = None,
    note: str | None = None,
    writeback: Collection[str] = (),
) -> LeadRating | None:
    """Record a rating (a new row: history is kept) and bring the owner's DM up to date;
    ``writeback``: the CRMs whose leads get their rating written back
    (Settings.lead_writeback_crms).

    None when it changes nothing (the same rating clicked twice). Raises NotAllowed for
    someone who is not the owner or a sales manager, DomainError for a rejection without a
    reason from the taxonomy or a change after 7 days.
    """
    if rating not in LEAD_RATINGS:
        raise DomainError(f"A lead is rated accepted, not ready or rejected, not {rating!r}.")
    lead = session.get(Lead, lead_pk, with_for_update=True)
    if lead is None:
        raise DomainError("That lead no longer exists.")
    check_may_rate(lead, user_id=user_id, managers=managers)
    note = (note or "").strip() or None
    if rating == LeadStatus.REJECTED:
        if not reason or reason not in reasons:
            raise DomainError("Please choose why the lead is rejected.")
    else:
        reason = None
    if note is not None and len(note) > MAX_NOTE:
        raise DomainError(f"Please keep the note under {MAX_NOTE} characters.")
    latest = latest_rating(lead)
    if latest is not None:
        until = may_change_until(lead)
        if until is not None and now > until:
            raise DomainError(
                f"This lead was rated more than {RATING_CHANGE_DAYS} days ago; its rating "
                "can no longer be changed."
            )
        if (latest.rating, latest.reason, latest.note) == (rating, reason, note):
            return None
    definition = definition_svc.current(session)
    row = LeadRating(
        rating=rating,
        reason=reason,
        note=note,
        rated_by=user_id,
        rated_at=now,
        definition_version=definition.version if definition else None,
    )
    lead.ratings.append(row)
    lead.status = LeadStatus(rating)
    if lead.first_response_at is None:
        lead.first_response_at = now
    session.flush()
    rated_dm(session, lead, now=now)
    outgoing.lead_writeback(session, lead, crms=writeback, now=now)
    event_on_commit(
        session,
        "lead_rated",
        f"lead {lead.id} rated {rating} by {user_id}",
        lead_id=lead.id,
        rating=rating,
        reason=reason,
        late=lead.first_response_at > lead.sla_due_at,
    )
    return row


def rated_dm(session: Session, lead: Lead, *, now: datetime) -> None:
    """The owner's DM shown as rated (edited in place, re-sent with the latest rating)."""
    if lead.nudge_channel and lead.nudge_ts:
        outbox.enqueue(
            session,
            key=f"lead-rated:{lead.id}",
            kind=OutboxKind.LEAD_RATED,
            op=Op.UPDATE,
            channel=lead.nudge_channel,
            ts=lead.nudge_ts,
            subject_id=lead.id,
            now=now,
            again=True,
        )


def waiting_leads(session: Session, *, user_id: str, manager: bool = False) -> list[Lead]:
    """Unrated leads, the most urgent first: the user's own, or (a manager's) everyone's."""
    query = (
        select(Lead)
        .where(Lead.status == LeadStatus.NEW, Lead.origin != IMPORTED)  # history waits on no one
        .order_by(Lead.sla_due_at, Lead.id)
    )
    if not manager:
        query = query.where(Lead.owner_user_id == user_id)
    return list(session.scalars(query.limit(200)))
