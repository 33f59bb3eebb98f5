"""The Friday prompt: due prompts queued (each rep once a week), reminders, missed weeks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.db import session_scope
from bot.jobs.roster import RosterSync
from bot.models import Member, OutboxState
from bot.runtime import Runtime
from bot.services import feedback as feedback_svc
from bot.services import installation
from bot.services import outbox as outbox_svc
from bot.services import roster as roster_svc
from bot.services.calendar import occurrence_in_week, zone
from bot.services.feedback import DuePrompt, Schedule
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)

ENQUEUE_CHUNK = 500  # prompts claimed and queued per transaction


def schedule_of(rt: Runtime) -> Schedule:
    s = rt.settings
    return Schedule(s.prompt_schedule, s.reminder_schedule, s.default_timezone)


@dataclass
class FanOut:
    sent: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_sales: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)  # in the outbox, not confirmed sent yet


def due_now(
    session: Session, *, reps: list[Member], schedule: Schedule, now: datetime, force: bool
) -> list[DuePrompt]:
    """The prompts due now, without a week whose prompt time passed before the installation
    began (its first tick, recorded here if this is it); ``force`` (``closeloop prompt
    --now``) is an operator asking for this week's, so it takes them all."""
    found = feedback_svc.due_prompts(session, reps=reps, schedule=schedule, now=now, force=force)
    if force or not found:
        return found
    began = installation.record_start(session, now=now)
    return [
        d
        for d in found
        if occurrence_in_week(d.week_start, schedule.prompt, zone(d.tz, schedule.default_tz))
        >= began
    ]


def queue_due_prompts(
    rt: Runtime,
    roster: RosterSync,
    *,
    only_users: list[str] | None = None,
    force: bool = False,
    send: bool = False,
) -> FanOut:
    """Queue the prompt of every rep whose prompt is due (``force``: this week's, now),
    exactly once; ``send`` then sends the outbox here (only the scheduler role may)."""
    result = FanOut()
    sales = set(roster())
    if only_users:
        result.not_sales = [u for u in only_users if u not in sales]
    now = rt.now()
    schedule = schedule_of(rt)
    with session_scope(rt.session_factory) as session:
        reps = roster_svc.active_sales(session)
        if only_users:
            reps = [r for r in reps if r.user_id in only_users]
        due = due_now(session, reps=reps, schedule=schedule, now=now, force=force)
        due_ids = {d.user_id for d in due}
        result.already = [r.user_id for r in reps if r.user_id not in due_ids] if force else []
    queued: dict[str, str] = {}
    for start in range(0, len(due), ENQUEUE_CHUNK):
        with session_scope(rt.session_factory) as session:
            for item in due[start : start + ENQUEUE_CHUNK]:
                prompt = feedback_svc.claim_prompt(session, due=item, schedule=schedule, now=now)
                if prompt is None:
                    result.already.append(item.user_id)
                    continue
                session.flush()
                queued[f"prompt:{prompt.id}"] = item.user_id
    if send:  # also finishes what an earlier, interrupted run left in the outbox
        rt.outbox.drain()
    if queued:
        with session_scope(rt.session_factory) as session:
            states = outbox_svc.states_of(session, list(queued))
        for key, user_id in queued.items():
            state = states.get(key)
            if state == OutboxState.SENT:
                result.sent.append(user_id)
            elif state in (OutboxState.FAILED, OutboxState.DROPPED):
                result.failed.append(user_id)
            else:
                result.queued.append(user_id)
    return result


@dataclass
class Preview:
    """What ``closeloop prompt --now --dry-run`` would do: nothing is stored or sent."""

    would_prompt: list[DuePrompt] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    not_sales: list[str] = field(default_factory=list)


def preview_prompts(rt: Runtime, *, only_users: list[str] | None = None) -> Preview:
    """Who ``queue_due_prompts(force=True)`` would prompt now, and for which week in their
    time zone. It only reads: the sales team and unknown time zones from Slack (as the
    roster sync does), the rest from the database; it stores nothing and sends nothing."""
    result = Preview()
    sales = rt.directory.sales_ids()
    if only_users:
        result.not_sales = [u for u in only_users if u not in sales]
        sales = [u for u in sales if u in only_users]
    with session_scope(rt.session_factory) as session:
        known = {
            m.user_id: m.tz
            for m in session.scalars(select(Member).where(Member.user_id.in_(sales)))
        }
        reps = []
        for user_id in sales:
            tz = known.get(user_id)
            if tz is None:
                try:
                    tz = rt.directory.profile(user_id)[0]
                except SLACK_ERRORS:
                    log.warning("users.info for %s failed; showing the default zone", user_id)
            reps.append(Member(user_id=user_id, tz=tz))  # never added to the session
        result.would_prompt = feedback_svc.due_prompts(
            session, reps=reps, schedule=schedule_of(rt), now=rt.now(), force=True
        )
        session.rollback()
    due_ids = {d.user_id for d in result.would_prompt}
    result.already = [u for u in sales if u not in due_ids]
    return result


def prompts_step(rt: Runtime, roster: RosterSync) -> None:
    """The tick's step: due prompts queued (the roster read from Slack at most hourly)."""
    if not roster.due():
        with session_scope(rt.session_factory) as session:
            reps = roster_svc.active_sales(session)
            due = due_now(session, reps=reps, schedule=schedule_of(rt), now=rt.now(), force=False)
        if not due:
            return
    queue_due_prompts(rt, roster)


def queue_reminders(rt: Runtime) -> int:
    """One reminder per unanswered prompt, at the reminder time."""
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        return sum(
            feedback_svc.claim_reminder(session, prompt=prompt, now=now)
            for prompt in feedback_svc.due_reminders(session, now=now)
        )


def close_missed_weeks(rt: Runtime) -> int:
    """Weeks that closed unanswered are recorded as missed (their DM says so)."""
    with session_scope(rt.session_factory) as session:
        return len(feedback_svc.close_missed(session, now=rt.now()))
