"""The win/loss log: closed deals, their entries, the 24-hour rule."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.logs import event_on_commit
from bot.models import (
    Deal,
    LoopPost,
    Outcome,
    PostKind,
    WinLossEntry,
    WinLossRevision,
)
from bot.services import competitors as competitor_svc
from bot.services import loop as loop_svc
from bot.services import outgoing
from bot.services.calendar import local_instant
from bot.services.deal_input import (
    DealIn,
    close_date_problem,
    deadline_for,
)
from bot.services.errors import DomainError, NotAllowed

MAX_TEXT = 3000
MIN_REASON_WORDS = 4
EDIT_WINDOW = timedelta(days=7)
NUDGE_RETRY_AFTER = timedelta(minutes=2)


# --- deals --------------------------------------------------------------------------------


def receive_deal(
    session: Session, *, deal: DealIn, deadline_hours: int, now: datetime, origin: str = "crm"
) -> tuple[Deal, bool]:
    """Store a closed deal once per CRM ID; return it and whether it is new."""
    existing = session.scalars(select(Deal).where(Deal.external_id == deal.external_id)).first()
    if existing is not None:
        return existing, False
    row = Deal(
        external_id=deal.external_id,
        name=deal.name,
        outcome=deal.outcome,
        closed_at=deal.closed_at,
        owner_user_id=deal.owner_user_id,
        owner_email=deal.owner_email,
        amount=deal.amount,
        source=deal.source,
        crm_reason=deal.crm_reason,
        origin=origin,
        received_at=now,
        deadline_at=deadline_for(
            deal.closed_at, date_only=deal.closed_on_date_only, hours=deadline_hours
        ),
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # the same deal arriving twice at once
        found = session.scalars(select(Deal).where(Deal.external_id == deal.external_id)).one()
        return found, False
    event_on_commit(
        session,
        "deal_received",
        f"deal {row.id} ({deal.external_id}, {deal.outcome}) received from {origin}",
        deal_id=row.id,
        external_id=deal.external_id,
        outcome=deal.outcome,
        origin=origin,
    )
    return row, True


def refresh_crm_deal(session: Session, *, deal_pk: int, deal: DealIn) -> bool:
    """Bring a deal not logged yet to the CRM's latest state (outcome, name, amount, CRM
    reason); whether anything changed. A logged deal keeps what the rep logged."""
    row = get_deal(session, deal_pk)
    if row.entry is not None:
        return False
    latest = {
        "outcome": deal.outcome,
        "name": deal.name,
        "amount": deal.amount,
        "crm_reason": deal.crm_reason,
    }
    changed = {k: v for k, v in latest.items() if getattr(row, k) != v}
    for key, value in changed.items():
        setattr(row, key, value)
    return bool(changed)


def get_deal(session: Session, deal_pk: int) -> Deal:
    deal = session.get(Deal, deal_pk)
    if deal is None:
        raise DomainError("That deal no longer exists.")
    return deal


def waiting_deals(session: Session, *, user_id: str, manager: bool = False) -> list[Deal]:
    """Deals still without an entry, most urgent first: the user's own, or (for a sales
    manager, who may log any deal) every one."""
    query = (
        select(Deal)
        .outerjoin(WinLossEntry, WinLossEntry.deal_id == Deal.id)
        .where(WinLossEntry.id.is_(None))
        .order_by(Deal.deadline_at, Deal.id)
    )
    if not manager:
        query = query.where(Deal.owner_user_id == user_id)
    return list(session.scalars(query.limit(200)))


def deals_needing_owner_or_nudge(session: Session, *, now: datetime) -> list[Deal]:
    """Deals without an entry whose owner was not resolved or whose nudge has not gone out."""
    stale = now - NUDGE_RETRY_AFTER
    return list(
        session.scalars(
            select(Deal)
            .outerjoin(WinLossEntry, WinLossEntry.deal_id == Deal.id)
            .where(
                WinLossEntry.id.is_(None),
                Deal.origin == "crm",
                Deal.nudge_ts.is_(None),
                Deal.owner_missing_reported_at.is_(None),
                or_(Deal.nudge_claimed_at.is_(None), Deal.nudge_claimed_at < stale),
            )
            .order_by(Deal.id)
        )
    )


def claim_nudge(session: Session, *, deal: Deal, now: datetime) -> bool:
    """Take the nudge for this deal (one process, one DM); False when another run has it."""
    stale = now - NUDGE_RETRY_AFTER
    result = session.execute(
        update(Deal)
        .where(
            Deal.id == deal.id,
            Deal.nudge_ts.is_(None),
            or_(Deal.nudge_claimed_at.is_(None), Deal.nudge_claimed_at < stale),
        )
        .values(nudge_claimed_at=now, nudge_attempts=Deal.nudge_attempts + 1)
    )
    return cast(CursorResult, result).rowcount == 1


def reminder_time(deal: Deal, *, reminder_hours: int, deadline_hours: int) -> datetime:
    """Hour ``reminder_hours`` of the deal's 24 (counted back from its deadline, so a
    date-only close is reminded on the right day)."""
    return deal.deadline_at - timedelta(hours=deadline_hours - reminder_hours)


def due_deal_reminders(
    session: Session, *, now: datetime, reminder_hours: int, deadline_hours: int
) -> list[Deal]:
    """Nudged deals with no entry at their reminder time, not yet reminded. A deal that
    arrived after that time gets no reminder: its nudge came later than one would."""
    rows = session.scalars(
        select(Deal).where(
            ~_has_entry(),
            Deal.nudge_ts.is_not(None),
            Deal.reminded_at.is_(None),
            Deal.overdue_at.is_(None),
            Deal.deadline_at > now,
        )
    ).all()
    due = []
    for deal in rows:
        at = reminder_time(deal, reminder_hours=reminder_hours, deadline_hours=deadline_hours)
        if at <= now and deal.received_at < at:
            due.append(deal)
    return due


def _has_entry():
    return select(WinLossEntry.id).where(WinLossEntry.deal_id == Deal.id).exists()


def claim_deal_reminder(session: Session, *, deal: Deal, now: datetime) -> bool:
    """Queue the deal's one reminder; False when another run already did."""
    result = session.execute(
        update(Deal)
        .where(Deal.id == deal.id, Deal.reminded_at.is_(None), ~_has_entry())
        .values(reminded_at=now)
    )
    if cast(CursorResult, result).rowcount != 1:
        return False
    outgoing.deal_reminder(session, deal, now=now)
    return True


def mark_overdue(session: Session, *, escalation_channel: str, now: datetime) -> list[Deal]:
    """Deals past their deadline without an entry, marked overdue exactly once, with the
    managers' message queued."""
    candidates = session.scalars(
        select(Deal)
        .outerjoin(WinLossEntry, WinLossEntry.deal_id == Deal.id)
        .where(WinLossEntry.id.is_(None), Deal.overdue_at.is_(None), Deal.deadline_at <= now)
        .order_by(Deal.id)
    ).all()
    marked = []
    for deal in candidates:
        result = session.execute(
            update(Deal)
            .where(Deal.id == deal.id, Deal.overdue_at.is_(None), ~_has_entry())
            .values(overdue_at=now)
        )
        if cast(CursorResult, result).rowcount == 1:
            deal.overdue_at = now
            outgoing.overdue(session, deal, channel=escalation_channel, now=now)
            marked.append(deal)
    return marked


# --- entries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryIn:
    """What a rep typed into the /winloss modal."""

    deal_name: str
    outcome: str
    reason: str
    reason_category: str | None
    competitor: str | None
    insight: str | None
    closed_on: date
    amount: Decimal | None = None
    source: str | None = None
    deal_pk: int | None = None
    extra: dict = field(default_factory=dict)


SHORTHAND = {
    "price",
    "pricing",
    "cost",
    "costs",
    "budget",
    "no budget",
    "timing",
    "bad timing",
    "fit",
    "poor fit",
    "bad fit",
    "no fit",
    "not a fit",
    "good fit",
    "great fit",
    "features",
    "feature gap",
    "product gap",
    "product",
    "competitor",
    "competition",
    "lost to competitor",
    "relationship",
    "trust",
    "champion left",
    "no champion",
    "no decision",
    "other",
    "n/a",
    "na",
    "none",
    "unknown",
    "tbd",
    "went dark",
    "ghosted",
    "value",
    "roi",
    "integration",
    "implementation",
    "time to value",
    "too expensive",
    "expensive",
    "cheaper",
    "security",
}


def reason_problem(reason: str) -> str | None:
    """Why a reason is not in the customer's own words, or None when it is acceptable:
    fewer than four real words, or nothing but labels ("price, timing, poor fit")."""
    message = (
        "Please write what the customer actually said, in their words (a quote, at least "
        "a sentence), not a label like \u201cpoor fit\u201d or \u201cprice\u201d."
    )
    words = [w for w in re.findall(r"[^\W_]+(?:['’][^\W_]+)?", reason) if len(w) > 1]
    if len(words) < MIN_REASON_WORDS:
        return message
    pieces = [
        " ".join(p.split()).casefold()
        for p in re.split(r"[,;/+&|]|\band\b|\bor\b|\.", reason.strip().strip("\"'“”"))
    ]
    if all(p in SHORTHAND for p in pieces if p):
        return message
    return None


def validate_entry(entry: EntryIn, *, categories: Sequence[str], today: date) -> dict[str, str]:
    """Block ID -> problem for the modal (empty when the entry can be stored)."""
    errors: dict[str, str] = {}
    if not entry.deal_name.strip():
        errors["deal_name"] = "Please name the deal."
    elif len(entry.deal_name) > 255:
        errors["deal_name"] = "Please keep the deal name under 255 characters."
    if entry.outcome not in tuple(Outcome):
        errors["outcome"] = "Please pick won, lost or no decision."
    reason = entry.reason.strip()
    if not reason:
        errors["reason"] = "Please quote the customer's primary reason."
    elif len(reason) > MAX_TEXT:
        errors["reason"] = f"Please keep this under {MAX_TEXT} characters."
    else:
        problem = reason_problem(reason)
        if problem:
            errors["reason"] = problem
    if entry.reason_category not in categories:
        errors["reason_category"] = "Please pick one of the listed categories."
    if not (entry.insight or "").strip():
        errors["insight"] = "Please say what marketing should do differently."
    elif len(entry.insight or "") > MAX_TEXT:
        errors["insight"] = f"Please keep this under {MAX_TEXT} characters."
    if entry.competitor and len(entry.competitor) > competitor_svc.MAX_NAME:
        errors["competitor_new"] = "Please keep the name under 120 characters."
    problem = close_date_problem(entry.closed_on, today=today)
    if problem:
        errors["closed_on"] = problem
    elif entry.closed_on > today + timedelta(days=1):
        errors["closed_on"] = "The close date cannot be in the future."
    if entry.source and len(entry.source) > 255:
        errors["source"] = "Please keep this under 255 characters."
    return errors


def check_may_log(deal: Deal, *, user_id: str, managers: Collection[str]) -> None:
    """Only the deal's owner or a sales manager logs or edits its entry."""
    if user_id in managers:
        return
    if deal.owner_user_id != user_id:
        raise NotAllowed(
            "Only the deal's owner or a sales manager can log or edit this deal's win/loss entry."
        )


def snapshot(entry: WinLossEntry, *, by: str, now: datetime) -> WinLossRevision:
    """The entry as it is now, kept before an edit replaces it."""
    return WinLossRevision(
        entry_id=entry.id,
        outcome=entry.outcome,
        reason=entry.reason,
        reason_category=entry.reason_category,
        competitor_name=entry.competitor.name if entry.competitor else None,
        insight=entry.insight,
        closed_at=entry.deal.closed_at,
        amount=entry.deal.amount,
        source=entry.deal.source,
        replaced_at=now,
        replaced_by=by,
    )


def log_entry(
    session: Session,
    *,
    entry_in: EntryIn,
    user_id: str,
    managers: Collection[str],
    categories: Sequence[str],
    deadline_hours: int,
    tz: ZoneInfo,
    channel: str,
    now: datetime,
    writeback: Collection[str] = (),
) -> tuple[WinLossEntry, LoopPost, bool]:
    """Store a new entry or edit an existing one; return it, its channel post, whether edited.
    ``writeback``: the CRMs whose deals get the entry's words and category written back
    (Settings.writeback_crms).

    Raises InvalidField-style DomainError for bad input, NotAllowed for the wrong person.
    """
    errors = validate_entry(entry_in, categories=categories, today=now.astimezone(tz).date())
    if errors:
        raise DomainError(" ".join(errors.values()))
    closed_at = local_instant(entry_in.closed_on, datetime.min.time(), tz)
    if entry_in.deal_pk is not None:
        deal = get_deal(session, entry_in.deal_pk)
        check_may_log(deal, user_id=user_id, managers=managers)
    else:
        deal = Deal(
            external_id=None,
            name=entry_in.deal_name.strip(),
            outcome=entry_in.outcome,
            closed_at=closed_at,
            owner_user_id=user_id,
            origin="slack",
            received_at=now,
            deadline_at=deadline_for(closed_at, date_only=True, hours=deadline_hours),
        )
        session.add(deal)
        session.flush()
    entry = deal.entry
    edited = entry is not None
    if entry is not None:
        if now - entry.logged_at > EDIT_WINDOW:
            raise DomainError("Entries can be edited for 7 days after they are logged.")
        session.add(snapshot(entry, by=user_id, now=now))
        entry.edit_count += 1
        entry.edited_at = now
    else:
        entry = WinLossEntry(
            deal=deal,
            logged_at=now,
            on_time=now <= deal.deadline_at,
            author_user_id=user_id,
        )
        session.add(entry)
    deal.name = entry_in.deal_name.strip()
    deal.outcome = entry_in.outcome
    if deal.origin == "slack" and closed_at != deal.closed_at:
        # the CRM's close time is authoritative for its deals; ours follow the rep
        deal.closed_at = closed_at
        deal.deadline_at = deadline_for(closed_at, date_only=True, hours=deadline_hours)
    deal.amount = entry_in.amount  # the form shows the stored values, so empty clears
    deal.source = (entry_in.source or "").strip() or None
    entry.outcome = entry_in.outcome
    entry.reason = entry_in.reason.strip()
    entry.reason_category = entry_in.reason_category
    entry.competitor = competitor_svc.get_or_create(session, entry_in.competitor)
    entry.insight = (entry_in.insight or "").strip() or None
    session.flush()
    outgoing.nudge_done(session, deal, now=now)
    outgoing.crm_writeback(session, entry, crms=writeback, now=now)
    post = loop_svc.ensure_post(
        session,
        kind=PostKind.WINLOSS,
        subject_id=entry.id,
        author=deal.owner_user_id or user_id,
        channel=channel,
        now=now,
    )
    event_on_commit(
        session,
        "entry_logged",
        f"win/loss entry {entry.id} {'edited' if edited else 'logged'} for deal {deal.id} by "
        f"{user_id}" + ("" if entry.on_time else " (late)"),
        entry_id=entry.id,
        deal_id=deal.id,
        user=user_id,
        edited=edited,
        on_time=entry.on_time,
    )
    return entry, post, edited


def entry_for_edit(
    session: Session, *, entry_id: int, user_id: str, managers: Collection[str], now: datetime
) -> WinLossEntry:
    """The entry, if ``user_id`` may still edit it (author, owner or manager; 7 days)."""
    entry = session.get(WinLossEntry, entry_id)
    if entry is None:
        raise DomainError("That entry no longer exists.")
    if user_id not in managers and user_id not in (entry.author_user_id, entry.deal.owner_user_id):
        raise NotAllowed("Only the entry's author or a sales manager can edit it.")
    if now - entry.logged_at > EDIT_WINDOW:
        raise DomainError("Entries can be edited for 7 days after they are logged.")
    return entry
