"""Win/loss orchestration: deals in, nudges out, entries to marketing, the 24-hour rule."""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from slack_sdk.errors import SlackApiError
from sqlalchemy.orm import Session

from bot.blocks import winloss as wl_blocks
from bot.db import session_scope
from bot.flows import outbox as outbox_flow
from bot.flows import publish_post
from bot.models import Deal, LoopPost, Member, WinLossEntry
from bot.runtime import SLACK_ERRORS, Runtime
from bot.services import competitors as competitor_svc
from bot.services import outbox as outbox_svc
from bot.services import roster as roster_svc
from bot.services import winloss as wl_svc
from bot.services.calendar import zone
from bot.services.outbox import Outgoing
from bot.services.winloss import DealIn, EntryIn

log = logging.getLogger(__name__)

MAX_NUDGE_ATTEMPTS = 5


def user_zone(session: Session, rt: Runtime, user_id: str, *, fetch: bool = False) -> ZoneInfo:
    """The user's time zone as last read from Slack, else DEFAULT_TIMEZONE. ``fetch`` reads
    users.info for someone Closeloop has not met yet (a manager, say) and remembers it."""
    member = session.get(Member, user_id)
    if member is None and fetch and user_id:
        try:
            tz, name = rt.roster.profile(user_id)
        except SLACK_ERRORS:
            log.warning("users.info for %s failed; using DEFAULT_TIMEZONE", user_id)
        else:
            roster_svc.record_profile(session, user_id=user_id, tz=tz, name=name, now=rt.now())
            return zone(tz, rt.settings.default_timezone)
    return zone(member.tz if member else None, rt.settings.default_timezone)


def today_for(rt: Runtime, user_id: str):
    """The user's own date today."""
    with session_scope(rt.session_factory) as session:
        return rt.now().astimezone(user_zone(session, rt, user_id, fetch=True)).date()


def _when(instant: datetime, tz: ZoneInfo) -> str:
    local = instant.astimezone(tz)
    return f"{local:%a %b} {local.day}, {local:%H:%M} ({tz.key})"


# --- the modal ----------------------------------------------------------------------------


def modal(
    rt: Runtime, *, user_id: str, deal_pk: int | None = None, entry_id: int | None = None
) -> dict:
    """The /winloss modal: blank, for a known deal (prefilled), or to edit an entry."""
    s = rt.settings
    with session_scope(rt.session_factory) as session:
        tz = user_zone(session, rt, user_id, fetch=True)
        today = rt.now().astimezone(tz).date()
        known = [c.name for c in competitor_svc.known(session)]
        prefill = None
        if entry_id is not None:
            entry = wl_svc.entry_for_edit(
                session,
                entry_id=entry_id,
                user_id=user_id,
                managers=s.sales_managers,
                now=rt.now(),
            )
            deal = entry.deal
            deal_pk = deal.id
            competitor = entry.competitor.name if entry.competitor else None
            if competitor and competitor not in known:
                known.insert(1, competitor)
            prefill = wl_blocks.Prefill(
                deal_name=deal.name,
                outcome=entry.outcome,
                reason=entry.reason,
                reason_category=entry.reason_category,
                competitor=competitor,
                insight=entry.insight,
                closed_on=deal.closed_at.astimezone(tz).date(),
                amount=deal.amount,
                source=deal.source,
            )
        elif deal_pk is not None:
            deal = wl_svc.get_deal(session, deal_pk)
            wl_svc.check_may_log(deal, user_id=user_id, managers=s.sales_managers)
            if deal.entry is not None:
                return modal(rt, user_id=user_id, entry_id=deal.entry.id)
            prefill = wl_blocks.Prefill(
                deal_name=deal.name,
                outcome=deal.outcome,
                closed_on=deal.closed_at.astimezone(tz).date(),
                amount=deal.amount,
                source=deal.source,
            )
        return wl_blocks.winloss_modal(
            categories=s.reason_categories,
            competitors=known,
            today=today,
            prefill=prefill,
            deal_pk=deal_pk,
            entry_id=entry_id,
        )


def check_may_log(rt: Runtime, *, user_id: str, deal_pk: int) -> None:
    """NotAllowed unless ``user_id`` owns the deal or is a sales manager (before anything
    else is read or stored for a submission; log_entry checks again when it stores)."""
    with session_scope(rt.session_factory) as session:
        deal = wl_svc.get_deal(session, deal_pk)
        wl_svc.check_may_log(deal, user_id=user_id, managers=rt.settings.sales_managers)


def save_entry(
    session: Session, rt: Runtime, *, user_id: str, entry_in: EntryIn
) -> tuple[int, int, int]:
    """Store (or edit) an entry in ``session``; return (entry id, post id, deal pk)."""
    s = rt.settings
    entry, post, _edited = wl_svc.log_entry(
        session,
        entry_in=entry_in,
        user_id=user_id,
        managers=s.sales_managers,
        categories=s.reason_categories,
        deadline_hours=s.winloss_deadline_hours,
        tz=user_zone(session, rt, user_id),
        channel=s.winloss_channel,
        now=rt.now(),
    )
    return entry.id, post.id, entry.deal_id


def after_entry(rt: Runtime, *, user_id: str, post_id: int, deal_pk: int) -> None:
    """Slack side of a saved entry: post or update it for marketing, mark the nudge done."""
    if not publish_post(rt, post_id):
        rt.tell(
            user_id,
            f"Your win/loss entry is saved, but I could not post it to "
            f"<#{rt.settings.winloss_channel}> yet (is Closeloop invited there?). "
            "I will keep trying.",
        )
    with session_scope(rt.session_factory) as session:
        deal = wl_svc.get_deal(session, deal_pk)
        channel, ts, name, owner = deal.nudge_channel, deal.nudge_ts, deal.name, deal.owner_user_id
    from bot.flows import home

    home.changed(rt, user_id, owner, marketing=True)
    if channel and ts:
        text, blocks = wl_blocks.logged_nudge(deal_name=name)
        rt.update(channel=channel, ts=ts, text=text, blocks=blocks)


def waiting_list(rt: Runtime, *, user_id: str) -> tuple[str, list[dict]]:
    """The caller's deals still waiting for an entry (``/winloss list``)."""
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        tz = user_zone(session, rt, user_id)
        rows = [
            (d.id, d.name, _when(d.deadline_at, tz), d.deadline_at <= now)
            for d in wl_svc.waiting_deals(
                session, user_id=user_id, manager=user_id in rt.settings.sales_managers
            )
        ]
    return wl_blocks.waiting_list(rows)


# --- the channel post ---------------------------------------------------------------------


def entry_post_content(session: Session, post: LoopPost) -> tuple[str, list[dict]]:
    entry = session.get(WinLossEntry, post.subject_id)
    assert entry is not None
    deal = entry.deal
    return wl_blocks.entry_post(
        post_id=post.id,
        entry_id=entry.id,
        deal_name=deal.name,
        outcome=entry.outcome,
        reason=entry.reason,
        reason_category=entry.reason_category,
        competitor=entry.competitor.name if entry.competitor else None,
        insight=entry.insight,
        amount=deal.amount,
        source=deal.source,
        owner_id=deal.owner_user_id,
        author_id=entry.author_user_id,
        on_time=entry.on_time,
        logged_at=entry.logged_at,
        deadline_at=deal.deadline_at,
        edited=entry.edit_count > 0,
        acknowledged_by=[a.user_id for a in post.acks],
    )


def entry_subject(session: Session, post: LoopPost) -> str:
    from bot.blocks import escape_fit

    entry = session.get(WinLossEntry, post.subject_id)
    assert entry is not None
    return f"your win/loss entry for {escape_fit(entry.deal.name, 200)}"


# --- deals from the CRM -------------------------------------------------------------------


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
    """Find the owner in Slack and nudge them (or report an owner Slack does not know), once.

    Claimed in the database (one process, one owner lookup); the DM goes through the outbox,
    which sends it once and retries it. After MAX_NUDGE_ATTEMPTS failed lookups, or when Slack
    refuses the DM for good, the managers are told, so a deal never waits silently.
    """
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        deal = wl_svc.get_deal(session, deal_pk)
        if deal.entry is not None or deal.nudge_ts is not None:
            return
        if outbox_svc.exists(session, f"deal-nudge:{deal_pk}"):
            return  # queued already: the outbox sends it (and retries it)
        if not wl_svc.claim_nudge(session, deal=deal, now=now):
            return
        owner, email, attempts = deal.owner_user_id, deal.owner_email, deal.nudge_attempts
    try:
        owner = _resolve_owner(rt, owner, email)
    except SLACK_ERRORS:
        log.exception("looking up the owner of deal %s failed", deal_pk)
        if attempts >= MAX_NUDGE_ATTEMPTS:
            _report_missing_owner(rt, deal_pk)
        return
    if owner is None:
        _report_missing_owner(rt, deal_pk)
        return
    with session_scope(rt.session_factory) as session:
        deal = wl_svc.get_deal(session, deal_pk)
        deal.owner_user_id = owner
        deadline = _when(deal.deadline_at, user_zone(session, rt, owner))
        text, blocks = wl_blocks.nudge_message(
            deal_pk=deal_pk, deal_name=deal.name, outcome=deal.outcome, deadline=deadline
        )
        outbox_svc.enqueue(
            session,
            key=f"deal-nudge:{deal_pk}",
            kind="deal_nudge",
            channel=owner,
            text=text,
            blocks=blocks,
            subject_id=deal_pk,
            now=now,
        )


def nudge_new_deal(rt: Runtime, deal_pk: int) -> None:
    """A deal just arrived: queue its owner's nudge, and send it now if this process sends
    the outbox (otherwise the scheduler's outbox job does, within seconds)."""
    process_deal(rt, deal_pk)
    if rt.sends_outbox:
        outbox_flow.drain(rt)


def nudge_sent(rt: Runtime, deal_pk: int) -> bool:
    with session_scope(rt.session_factory) as session:
        return wl_svc.get_deal(session, deal_pk).nudge_ts is not None


def _nudge_wanted(session: Session, message: Outgoing, now: datetime) -> bool:
    deal = session.get(Deal, message.subject_id)
    return deal is not None and deal.entry is None


def _nudge_sent(session: Session, message: Outgoing, channel: str, ts: str, now: datetime):
    deal = session.get(Deal, message.subject_id)
    if deal is not None:
        deal.nudge_channel, deal.nudge_ts = channel, ts


def _nudge_home(rt: Runtime, message: Outgoing) -> None:
    from bot.flows import home

    home.changed(rt, message.channel)


def _nudge_refused(rt: Runtime, message: Outgoing, error: str) -> None:
    if message.subject_id is not None:
        _report_missing_owner(rt, message.subject_id)  # the managers are told; never silent


def _deal_reminder_wanted(session: Session, message: Outgoing, now: datetime) -> bool:
    deal = session.get(Deal, message.subject_id)
    return deal is not None and deal.entry is None and deal.overdue_at is None


outbox_flow.register(
    "deal_nudge",
    outbox_flow.Kind(
        wanted=_nudge_wanted, sent=_nudge_sent, after=_nudge_home, gave_up=_nudge_refused
    ),
)
outbox_flow.register("deal_reminder", outbox_flow.Kind(wanted=_deal_reminder_wanted))


def _resolve_owner(rt: Runtime, owner: str | None, email: str | None) -> str | None:
    """The owner's Slack user ID, or None when Slack has no such (active) person."""
    try:
        if owner is not None:
            user = rt.client.users_info(user=owner)["user"]
        elif email:
            user = rt.client.users_lookupByEmail(email=email)["user"]
        else:
            return None
    except SlackApiError as err:
        if err.response.get("error") in ("users_not_found", "user_not_found"):
            return None
        raise
    if user.get("deleted") or user.get("is_bot"):
        return None
    return user["id"]


def _report_missing_owner(rt: Runtime, deal_pk: int) -> None:
    with session_scope(rt.session_factory) as session:
        deal = wl_svc.get_deal(session, deal_pk)
        text, blocks = wl_blocks.owner_missing(
            deal_pk=deal.id,
            deal_name=deal.name,
            owner_email=deal.owner_email,
            owner_id=deal.owner_user_id,
        )
    if rt.post(channel=rt.settings.winloss_escalation_channel, text=text, blocks=blocks):
        with session_scope(rt.session_factory) as session:
            wl_svc.get_deal(session, deal_pk).owner_missing_reported_at = rt.now()


def process_pending_deals(rt: Runtime) -> int:
    """Nudges that have not gone out yet (new deals, earlier failures)."""
    with session_scope(rt.session_factory) as session:
        ids = [d.id for d in wl_svc.deals_needing_owner_or_nudge(session, now=rt.now())]
    for deal_pk in ids:
        process_deal(rt, deal_pk)
    return len(ids)


def send_deal_reminders(rt: Runtime) -> int:
    """One reminder at hour WINLOSS_REMINDER_HOURS after close (queued in the outbox)."""
    now = rt.now()
    s = rt.settings
    queued = 0
    with session_scope(rt.session_factory) as session:
        due = wl_svc.due_deal_reminders(
            session,
            now=now,
            reminder_hours=s.winloss_reminder_hours,
            deadline_hours=s.winloss_deadline_hours,
        )
        for deal in due:
            if not wl_svc.claim_deal_reminder(session, deal=deal, now=now):
                continue
            tz = user_zone(session, rt, deal.owner_user_id or "")
            text, blocks = wl_blocks.nudge_message(
                deal_pk=deal.id,
                deal_name=deal.name,
                outcome=deal.outcome,
                deadline=_when(deal.deadline_at, tz),
                reminder=True,
            )
            queued += outbox_svc.enqueue(
                session,
                key=f"deal-reminder:{deal.id}",
                kind="deal_reminder",
                channel=deal.owner_user_id or "",
                text=text,
                blocks=blocks,
                subject_id=deal.id,
                expires_at=deal.deadline_at,
                now=now,
            )
    return queued


def escalate_overdue(rt: Runtime) -> int:
    """Deals past the deadline without an entry: marked overdue, posted to the managers with
    a button to log it (retried if Slack fails)."""
    with session_scope(rt.session_factory) as session:
        marked = [
            (d.id, d.name, d.owner_user_id, d.owner_email, d.outcome)
            for d in wl_svc.mark_overdue(session, now=rt.now())
        ]
    sent = 0
    for deal_pk, name, owner, email, outcome in marked:
        text, blocks = wl_blocks.overdue_escalation(
            deal_pk=deal_pk,
            deal_name=name,
            owner_id=owner,
            owner_email=email,
            outcome=outcome,
            hours=rt.settings.winloss_deadline_hours,
        )
        if rt.post(channel=rt.settings.winloss_escalation_channel, text=text, blocks=blocks):
            sent += 1
        else:
            with session_scope(rt.session_factory) as session:
                wl_svc.unmark_overdue(session, deal_pk=deal_pk)
    return sent
