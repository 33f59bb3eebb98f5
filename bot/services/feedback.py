"""The weekly three-bullet loop: prompts, answers, skips, reminders and misses."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from bot.config import WeeklyTime
from bot.models import FeedbackAnswer, LoopPost, Member, Prompt, PromptStatus
from bot.services import DomainError, NotAllowed
from bot.services import loop as loop_svc
from bot.services.calendar import (
    next_occurrence,
    occurrence_in_week,
    week_end,
    week_start,
    zone,
)

MAX_FIELD = 3000
SKIP_REASONS = {"nothing": "Nothing this week", "out": "Out this week"}


@dataclass(frozen=True)
class Schedule:
    """When prompts go out and reminders follow, in each rep's own time zone."""

    prompt: WeeklyTime
    reminder: WeeklyTime
    default_tz: str = "UTC"


@dataclass(frozen=True)
class DuePrompt:
    user_id: str
    week_start: date
    tz: str


@dataclass(frozen=True)
class Bullets:
    worked: str
    fell_flat: str
    insight: str
    campaign: str | None = None


# --- prompting ---------------------------------------------------------------------------


def due_prompts(
    session: Session,
    *,
    reps: Iterable[Member],
    schedule: Schedule,
    now: datetime,
    force: bool = False,
) -> list[DuePrompt]:
    """Reps whose prompt for their current local week is due and not yet claimed.

    A week's prompt is due from its scheduled local time until the local week ends, so a bot
    that was down on Friday afternoon still sends it when it comes back that weekend.
    ``force`` ignores the time of day (``closeloop prompt --now``).
    """
    candidates: list[DuePrompt] = []
    for rep in reps:
        tz = zone(rep.tz, schedule.default_tz)
        monday = week_start(now, tz)
        if not force and not (
            occurrence_in_week(monday, schedule.prompt, tz) <= now < week_end(monday, tz)
        ):
            continue
        candidates.append(DuePrompt(rep.user_id, monday, tz.key))
    if not candidates:
        return []
    weeks = {c.week_start for c in candidates}
    taken = set(
        session.execute(
            select(Prompt.user_id, Prompt.week_start).where(
                Prompt.user_id.in_([c.user_id for c in candidates]),
                Prompt.week_start.in_(weeks),
            )
        ).all()
    )
    return [c for c in candidates if (c.user_id, c.week_start) not in taken]


def claim_prompt(
    session: Session, *, due: DuePrompt, schedule: Schedule, now: datetime
) -> Prompt | None:
    """Insert the (rep, week) row; None when another run already has it.

    The unique constraint on (user_id, week_start) is what guarantees one prompt per rep per
    week, whatever fires twice or runs in parallel. The caller commits before sending.
    """
    tz = zone(due.tz, schedule.default_tz)
    scheduled = max(occurrence_in_week(due.week_start, schedule.prompt, tz), now)
    remind_at = next_occurrence(scheduled, schedule.reminder, tz)
    prompt = Prompt(
        user_id=due.user_id,
        week_start=due.week_start,
        tz=tz.key,
        status=PromptStatus.PENDING,
        claimed_at=now,
        remind_at=remind_at,
        closes_at=next_occurrence(remind_at, schedule.prompt, tz),
    )
    try:
        with session.begin_nested():
            session.add(prompt)
    except IntegrityError:
        return None
    return prompt


def unsent_prompts(session: Session, *, stale_before: datetime, now: datetime) -> list[Prompt]:
    """Claimed prompts whose DM was never confirmed (a crash or a Slack failure)."""
    return list(
        session.scalars(
            select(Prompt)
            .join(Member, Member.user_id == Prompt.user_id)
            .where(
                Member.is_sales.is_(True),  # a rep who left the group is not chased
                Prompt.status == PromptStatus.PENDING,
                Prompt.claimed_at < stale_before,
                Prompt.closes_at > now,
            )
            .order_by(Prompt.id)
        )
    )


def reclaim(session: Session, *, prompt: Prompt, now: datetime, stale_before: datetime) -> bool:
    """Take over a stale pending prompt for a retry; False when another process has it."""
    result = session.execute(
        update(Prompt)
        .where(
            Prompt.id == prompt.id,
            Prompt.status == PromptStatus.PENDING,
            Prompt.claimed_at < stale_before,
        )
        .values(claimed_at=now, send_attempts=Prompt.send_attempts + 1)
    )
    return result.rowcount == 1


def mark_sent(prompt: Prompt, *, channel: str, ts: str, now: datetime) -> None:
    """Record that the DM went out."""
    prompt.dm_channel = channel
    prompt.dm_ts = ts
    prompt.sent_at = now
    prompt.last_error = None
    if prompt.status == PromptStatus.PENDING:
        prompt.status = PromptStatus.SENT


def mark_send_failed(prompt: Prompt, *, error: str) -> None:
    """Keep the prompt pending (it is retried) and remember why."""
    prompt.last_error = error[:255]


# --- answering ---------------------------------------------------------------------------


def get_prompt(session: Session, prompt_id: int, *, with_answer: bool = False) -> Prompt:
    options = [joinedload(Prompt.answer)] if with_answer else None
    prompt = session.get(Prompt, prompt_id, options=options)
    if prompt is None:
        raise DomainError("That prompt no longer exists.")
    return prompt


def open_prompt_for(
    session: Session, *, user_id: str, now: datetime, with_answer: bool = False
) -> Prompt | None:
    """The rep's most recent prompt that can still be answered (its answer loaded in the same
    query when ``with_answer``)."""
    query = select(Prompt)
    if with_answer:
        query = query.options(joinedload(Prompt.answer))
    return session.scalars(
        query.where(
            Prompt.user_id == user_id,
            Prompt.status.in_(PromptStatus.OPEN),
            Prompt.closes_at > now,
        )
        .order_by(Prompt.week_start.desc())
        .limit(1)
    ).first()


def validate_bullets(bullets: Bullets) -> dict[str, str]:
    """Field name -> problem, for an answer that cannot be stored (empty means fine)."""
    errors: dict[str, str] = {}
    for name in ("worked", "fell_flat", "insight"):
        value = getattr(bullets, name).strip()
        if not value:
            errors[name] = "Please fill this in."
        elif len(value) > MAX_FIELD:
            errors[name] = f"Please keep this under {MAX_FIELD} characters ({len(value)} now)."
    if bullets.campaign and len(bullets.campaign) > 255:
        errors["campaign"] = "Please keep this under 255 characters."
    return errors


def check_can_answer(prompt: Prompt, user_id: str) -> None:
    """Raise unless ``user_id`` may answer ``prompt`` now."""
    if prompt.user_id != user_id:
        raise NotAllowed("That prompt was sent to someone else.")
    if prompt.status == PromptStatus.MISSED:
        raise DomainError(
            f"The week of {prompt.week_start:%b %-d} is closed and recorded as missed; "
            "your next prompt arrives on schedule."
        )


def record_answer(
    session: Session,
    *,
    prompt: Prompt,
    user_id: str,
    bullets: Bullets,
    source: str,
    feedback_channel: str,
    now: datetime,
) -> tuple[FeedbackAnswer, LoopPost, bool]:
    """Store (or edit) this week's answer; return it, its marketing post and whether edited."""
    check_can_answer(prompt, user_id)
    errors = validate_bullets(bullets)
    if errors:
        raise DomainError(" ".join(errors.values()))
    answer = prompt.answer
    edited = answer is not None
    if answer is None:
        answer = FeedbackAnswer(prompt=prompt, user_id=user_id, source=source, created_at=now)
        session.add(answer)
    else:
        answer.edit_count += 1
    answer.worked = bullets.worked.strip()
    answer.fell_flat = bullets.fell_flat.strip()
    answer.insight = bullets.insight.strip()
    answer.campaign = (bullets.campaign or "").strip() or None
    answer.updated_at = now
    prompt.status = PromptStatus.ANSWERED
    prompt.skip_reason = None
    prompt.answered_at = prompt.answered_at or now
    session.flush()
    post = loop_svc.ensure_post(
        session,
        kind="feedback",
        subject_id=answer.id,
        author=user_id,
        channel=feedback_channel,
        now=now,
    )
    return answer, post, edited


def record_skip(
    session: Session, *, prompt: Prompt, user_id: str, reason: str, now: datetime
) -> Prompt:
    """Record "nothing this week" or "out this week"."""
    check_can_answer(prompt, user_id)
    if reason not in SKIP_REASONS:
        raise DomainError("Unknown reason for skipping.")
    if prompt.status == PromptStatus.ANSWERED:
        raise DomainError("You already answered this week; use Edit answer to change it.")
    prompt.status = PromptStatus.SKIPPED
    prompt.skip_reason = reason
    prompt.answered_at = now
    return prompt


# --- reminders and misses ----------------------------------------------------------------


def due_reminders(session: Session, *, now: datetime) -> list[Prompt]:
    """Unanswered prompts whose one reminder is due."""
    return list(
        session.scalars(
            select(Prompt)
            .join(Member, Member.user_id == Prompt.user_id)
            .where(
                Member.is_sales.is_(True),
                Prompt.status == PromptStatus.SENT,
                Prompt.reminded_at.is_(None),
                Prompt.remind_at <= now,
                Prompt.closes_at > now,
            )
            .order_by(Prompt.id)
        )
    )


def claim_reminder(session: Session, *, prompt: Prompt, now: datetime) -> bool:
    """Mark the reminder as sent; False when another run already did (one reminder only)."""
    result = session.execute(
        update(Prompt)
        .where(Prompt.id == prompt.id, Prompt.reminded_at.is_(None))
        .values(reminded_at=now)
    )
    if result.rowcount == 1:
        prompt.reminded_at = now
        return True
    return False


def unclaim_reminder(session: Session, *, prompt_id: int) -> None:
    """The reminder did not go out: let a later tick try again."""
    session.execute(update(Prompt).where(Prompt.id == prompt_id).values(reminded_at=None))


def close_missed(session: Session, *, now: datetime) -> list[Prompt]:
    """Record unanswered prompts whose week has closed as missed; return them."""
    unanswered = (PromptStatus.SENT, PromptStatus.PENDING)
    candidates = list(
        session.scalars(
            select(Prompt).where(Prompt.status.in_(unanswered), Prompt.closes_at <= now)
        )
    )
    missed = []
    for prompt in candidates:
        # guarded, so an answer committed meanwhile is never overwritten
        result = session.execute(
            update(Prompt)
            .where(Prompt.id == prompt.id, Prompt.status.in_(unanswered))
            .values(status=PromptStatus.MISSED)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            session.refresh(prompt)
            missed.append(prompt)
    return missed


# --- replies typed in the DM -------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*•◦‣▪–—]|\d{1,2}[.)]|\(\d{1,2}\))\s+(.*)$")


def parse_three_bullets(text: str, *, require_markers: bool = False) -> Bullets | None:
    """Three bullet lines (``-``, ``*``, ``•``, ``1.``) or three plain lines; else None.

    A line that does not start a bullet continues the previous one. ``require_markers``
    refuses three plain lines (used once the week is answered, so a chatty three-line reply
    never overwrites the answer). ``text`` is the raw text the rep typed (Slack's
    ``&amp;``/``&lt;``/``&gt;`` already decoded).
    """
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines:
        return None
    items: list[str] = []
    has_markers = any(_BULLET.match(line) for line in lines)
    if require_markers and not has_markers:
        return None
    if has_markers:
        for line in lines:
            match = _BULLET.match(line)
            if match:
                items.append(match.group(1).strip())
            elif items:
                items[-1] = f"{items[-1]}\n{line.strip()}"
            else:
                return None  # text before the first bullet: not the template
    else:
        items = [line.strip() for line in lines]
    if len(items) != 3 or not all(items):
        return None
    return Bullets(*items)


def unescape_slack(text: str) -> str:
    """Decode Slack's message-text escaping (``&lt;`` ``&gt;`` ``&amp;``)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def is_marketing(user_id: str, marketing_ids: Collection[str]) -> bool:
    return user_id in marketing_ids
