"""What the Home tab shows each person: what is waiting on them."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.config_leads import LeadSettings
from bot.models import (
    FORGOTTEN_PREFIX,
    Deal,
    FeedbackAnswer,
    LoopPost,
    PostKind,
    Prompt,
    WinLossEntry,
)
from bot.services import definition as definition_svc
from bot.services import digest as digest_svc
from bot.services import lead_report
from bot.services import leads as lead_svc
from bot.services import winloss as wl_svc

WAITING_LIMIT = 20
LEADS_LIMIT = 10  # two blocks each on the Home tab (100 blocks at most)
RECENT_LIMIT = 5


def rep_view(session: Session, *, user_id: str, manager: bool = False) -> dict:
    """A rep's week: the latest prompt, deals waiting for an entry, recent entries."""
    prompt = session.scalars(
        select(Prompt).where(Prompt.user_id == user_id).order_by(Prompt.week_start.desc())
    ).first()
    deals = wl_svc.waiting_deals(session, user_id=user_id, manager=manager)[:WAITING_LIMIT]
    feedback = session.execute(
        select(
            FeedbackAnswer.id,
            Prompt.week_start,
            FeedbackAnswer.updated_at,
            LoopPost.first_ack_at,
            LoopPost.id,
        )
        .join(Prompt, Prompt.id == FeedbackAnswer.prompt_id)
        .outerjoin(
            LoopPost,
            (LoopPost.kind == PostKind.FEEDBACK) & (LoopPost.subject_id == FeedbackAnswer.id),
        )
        .where(FeedbackAnswer.user_id == user_id)
        .order_by(FeedbackAnswer.updated_at.desc())
        .limit(RECENT_LIMIT)
    ).all()
    entries = session.execute(
        select(
            WinLossEntry.id,
            Deal.name,
            WinLossEntry.outcome,
            WinLossEntry.logged_at,
            WinLossEntry.on_time,
            LoopPost.first_ack_at,
            LoopPost.id,
        )
        .join(Deal, Deal.id == WinLossEntry.deal_id)
        .outerjoin(
            LoopPost, (LoopPost.kind == PostKind.WINLOSS) & (LoopPost.subject_id == WinLossEntry.id)
        )
        .where((WinLossEntry.author_user_id == user_id) | (Deal.owner_user_id == user_id))
        .order_by(WinLossEntry.logged_at.desc())
        .limit(RECENT_LIMIT)
    ).all()
    recent: list[dict[str, Any]] = [
        {
            "kind": "feedback",
            "label": f"Feedback, week of {week:%b} {week.day}",
            "at": at,
            "acknowledged": acked is not None,
            "in_loop": post is not None,
        }
        for _id, week, at, acked, post in feedback
    ] + [
        {
            "kind": "winloss",
            "label": f"{outcome.replace('_', ' ').title()}: {name}",
            "at": at,
            "acknowledged": acked is not None,
            # Imported history (closeloop import) was never posted to marketing: nothing to
            # wait for.
            "in_loop": post is not None,
            "on_time": on_time,
        }
        for _id, name, outcome, at, on_time, acked, post in entries
    ]
    recent.sort(key=lambda item: item["at"], reverse=True)
    return {
        "prompt": None
        if prompt is None
        else {
            "id": prompt.id,
            "week_start": prompt.week_start,
            "status": prompt.status,
            "skip_reason": prompt.skip_reason,
            "closes_at": prompt.closes_at,
        },
        "deals": [
            {
                "id": d.id,
                "name": d.name,
                "deadline_at": d.deadline_at,
                "overdue": d.overdue_at is not None,
                "owner": d.owner_user_id,
            }
            for d in deals
        ],
        "recent": recent[:RECENT_LIMIT],
        "leads": [
            {
                "id": lead.id,
                "person": lead.person,
                "company": lead.company,
                "source": lead.source,
                "due_at": lead.sla_due_at,
                "owner": lead.owner_user_id,
            }
            for lead in lead_svc.waiting_leads(session, user_id=user_id, manager=manager)[
                :LEADS_LIMIT
            ]
        ],
    }


# Posted, not acknowledged, and by someone still known: the posts of a person
# ``closeloop forget-user`` forgot cannot be acknowledged any more (services.loop).
_open_loop = (
    LoopPost.ts.is_not(None),
    LoopPost.first_ack_at.is_(None),
    LoopPost.author_user_id.not_like(f"{FORGOTTEN_PREFIX}%"),
)


def marketing_view(
    session: Session,
    *,
    now: datetime,
    tz: ZoneInfo,
    leads: LeadSettings | None = None,
) -> dict:
    """Marketing's queue (oldest first), the month so far in three numbers, and last week's
    leads (their sources over LEAD_REJECTION_ALERT first)."""
    waiting = session.execute(
        select(
            LoopPost.id,
            LoopPost.kind,
            LoopPost.author_user_id,
            LoopPost.created_at,
            LoopPost.channel,
            LoopPost.ts,
        )
        .where(*_open_loop)
        .order_by(LoopPost.created_at, LoopPost.id)
        .limit(WAITING_LIMIT)
    ).all()
    count_waiting = session.scalar(select(func.count(LoopPost.id)).where(*_open_loop))
    month = digest_svc.Month.containing(now, tz)
    start, end = month.bounds(tz)
    outcomes = digest_svc.outcome_counts(session, start, end)
    feedback = digest_svc.feedback_figures(session, month, now=now)
    loops = digest_svc.loop_figures(session, start, end, now=now)
    return {
        "waiting": [
            {"post_id": i, "kind": k, "author": a, "created_at": at, "channel": c, "ts": ts}
            for i, k, a, at, c, ts in waiting
        ],
        "waiting_total": count_waiting or 0,
        "month": str(month),
        "win_rate": outcomes["win_rate"],
        "decided": outcomes["wins"] + outcomes["losses"],
        "feedback_response_rate": feedback["feedback_response_rate"],
        "acknowledged_rate": loops["acknowledged_rate"],
        "leads": None if leads is None else last_week_leads(session, now=now, s=leads),
    }


def last_week_leads(session: Session, *, now: datetime, s: LeadSettings) -> dict | None:
    """Last week's lead figures as the Monday report counts them; None without leads."""
    tz = ZoneInfo(s.report_timezone)
    week = lead_report.IsoWeek.containing(now, tz).previous()
    if not lead_report.has_leads(session, week, tz):
        return None
    f = lead_report.compute(
        session,
        week=week,
        tz=tz,
        now=now,
        rejection_alert=s.rejection_alert,
        min_sample=s.min_sample,
    )
    return {
        "week": f["week"],
        "handed_over": f["handed_over"],
        "rated": f["rated"],
        "rejected": f["rejected"],
        "no_response": f["no_response"],
        "sla_on_time": f["sla"]["on_time"],
        "sla_due": f["sla"]["due"],
        "min_sample": s.min_sample,
        "flagged": [
            {"source": g["name"], "rejected": g["rejected"], "rated": g["rated"]}
            for g in f["by_source"]
            if g["flagged"]
        ],
    }


def admin_view(session: Session, *, now: datetime, review_months: int, owners: bool) -> dict:
    """What the admins' Home tab says about the definition of a qualified lead: not reviewed
    (nor edited) for two review periods, or none written yet (said only once the lead loop
    is in use: it has owners, DEFINITION_OWNERS, or leads)."""
    status = definition_svc.review_status(session, now=now, months=review_months)
    return {
        "version": status.version,
        "last_reviewed_at": status.last_reviewed_at,
        "overdue": status.overdue,
        "missing": status.version is None and (owners or definition_svc.has_leads(session)),
    }
