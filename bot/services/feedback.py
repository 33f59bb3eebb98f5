"""The weekly three-bullet loop: prompts, answers, skips, reminders and misses."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import cast

from sqlalchemy import CursorResult, Table, and_, bindparam, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from bot.config import WeeklyTime
from bot.logs import event_on_commit
from bot.models import (
    OPEN_PROMPT,
    FeedbackAnswer,
    LoopPost,
    Member,
    PostKind,
    Prompt,
    PromptStatus,
)
from bot.services import outgoing
from bot.services.calendar import (
    next_occurrence,
    occurrence_in_week,
    week_end,
    week_start,
    zone,
)
from bot.services.errors import DomainError, NotAllowed

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
    """Insert the (rep, week) row and queue its DM; None when another run already has it.

    The unique constraint on (user_id, week_start) is what guarantees one prompt per rep per
    week, whatever fires twice or runs in parallel; the DM is queued in the same
    transaction, so a crash leaves both or neither.
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
    outgoing.prompt(session, prompt, now=now)
    return prompt


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
            Prompt.status.in_(OPEN_PROMPT),
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


def check_can_answer(prompt: Prompt | Row, user_id: str) -> None:
    """Raise unless ``user_id`` may answer ``prompt`` now (a Prompt, or a row with its
    user_id, status and week_start)."""
    if prompt.user_id != user_id:
        raise NotAllowed("That prompt was sent to someone else.")
    if prompt.status == PromptStatus.MISSED:
        raise _closed_as_missed(prompt.week_start)


def _closed_as_missed(week_start: date) -> DomainError:
    return DomainError(
        f"The week of {week_start:%b %-d} is closed and recorded as missed; "
        "your next prompt arrives on schedule."
    )


@dataclass(frozen=True)
class StoredAnswer:
    """What :func:`record_answer` stored, as ids (no objects, so nothing loads lazily later)."""

    prompt_id: int
    answer_id: int
    post_id: int
    edited: bool  # an earlier, different answer was replaced
    changed: bool  # False: the same text again (a resubmission, a replayed event)


_PROMPTS = cast(Table, Prompt.__table__)
_ANSWERS = cast(Table, FeedbackAnswer.__table__)
_POSTS = cast(Table, LoopPost.__table__)
# Built once: the answer form's hot path should not rebuild its statements every time.
_ANSWER_STATE = (
    select(
        _PROMPTS.c.user_id,
        _PROMPTS.c.status,
        _PROMPTS.c.week_start,
        _PROMPTS.c.skip_reason,
        _PROMPTS.c.answered_at,
        _PROMPTS.c.dm_channel,
        _PROMPTS.c.dm_ts,
        _PROMPTS.c.reminder_ts,
        _ANSWERS.c.id.label("answer_id"),
        _ANSWERS.c.worked,
        _ANSWERS.c.fell_flat,
        _ANSWERS.c.insight,
        _ANSWERS.c.campaign,
        _POSTS.c.id.label("post_id"),
        _POSTS.c.ts.label("post_ts"),
        _POSTS.c.channel.label("post_channel"),
    )
    .select_from(
        _PROMPTS.outerjoin(_ANSWERS, _ANSWERS.c.prompt_id == _PROMPTS.c.id).outerjoin(
            _POSTS, and_(_POSTS.c.kind == PostKind.FEEDBACK, _POSTS.c.subject_id == _ANSWERS.c.id)
        )
    )
    .where(_PROMPTS.c.id == bindparam("prompt_id"))
)
_NEW_ANSWER = insert(_ANSWERS)  # its id: inserted_primary_key (RETURNING, or SQLite's rowid)
_EDIT_ANSWER = (
    update(_ANSWERS)
    .where(_ANSWERS.c.id == bindparam("answer_id"))
    .values(edit_count=_ANSWERS.c.edit_count + 1)
)
# Not a week closed as missed since it was read (the minute tick closes weeks).
_ANSWERED = update(_PROMPTS).where(
    _PROMPTS.c.id == bindparam("prompt_id"), _PROMPTS.c.status != PromptStatus.MISSED
)
_NEW_POST = insert(_POSTS)


def record_answer(
    session: Session,
    *,
    prompt_id: int,
    user_id: str,
    bullets: Bullets,
    source: str,
    feedback_channel: str,
    now: datetime,
) -> StoredAnswer:
    """Store (or edit) this week's answer; queue its marketing post (or the post's update)
    and the prompt DM's "answered".

    The answer modal waits for this before its ack, so it is SQLAlchemy Core rather than the
    unit of work: one read (the prompt, its answer and that answer's post, joined) and then
    only the writes that change something. The same text again changes nothing and is not
    an edit. Objects of these rows already loaded in ``session`` are not refreshed.
    Raises DomainError (NotAllowed for someone else's prompt)."""
    row = session.execute(_ANSWER_STATE, {"prompt_id": prompt_id}).first()
    if row is None:
        raise DomainError("That prompt no longer exists.")
    check_can_answer(row, user_id)
    errors = validate_bullets(bullets)
    if errors:
        raise DomainError(" ".join(errors.values()))
    text = {
        "worked": bullets.worked.strip(),
        "fell_flat": bullets.fell_flat.strip(),
        "insight": bullets.insight.strip(),
        "campaign": (bullets.campaign or "").strip() or None,
    }
    answer_id = row.answer_id
    changed = answer_id is None or any(row._mapping[k] != v for k, v in text.items())
    if answer_id is None:
        new_answer = session.execute(
            _NEW_ANSWER,
            {
                "prompt_id": prompt_id,
                "user_id": user_id,
                "source": source,
                "created_at": now,
                "updated_at": now,
                **text,
            },
        )
        answer_key = cast(CursorResult, new_answer).inserted_primary_key
        assert answer_key is not None  # a one-row INSERT always has one
        answer_id = answer_key[0]
    elif changed:
        session.execute(_EDIT_ANSWER, {"answer_id": answer_id, "updated_at": now, **text})
    if row.status != PromptStatus.ANSWERED or row.skip_reason or row.answered_at is None:
        answered = session.execute(
            _ANSWERED,
            {
                "prompt_id": prompt_id,
                "status": PromptStatus.ANSWERED,
                "skip_reason": None,
                "answered_at": row.answered_at or now,
            },
        )
        # closed as missed since it was read: roll it all back
        if cast(CursorResult, answered).rowcount != 1:
            raise _closed_as_missed(row.week_start)
        outgoing.prompt_done_by_id(
            session,
            prompt_id=prompt_id,
            channel=row.dm_channel,
            stamps=(row.dm_ts, row.reminder_ts),
            now=now,
        )
    post_id = row.post_id
    if post_id is None:
        new_post = session.execute(
            _NEW_POST,
            {
                "kind": PostKind.FEEDBACK,
                "subject_id": answer_id,
                "author_user_id": user_id,
                "channel": feedback_channel,
                "created_at": now,
            },
        )
        post_key = cast(CursorResult, new_post).inserted_primary_key
        assert post_key is not None  # a one-row INSERT always has one
        post_id = post_key[0]
        outgoing.loop_post_by_id(
            session, post_id=post_id, channel=feedback_channel, ts=None, now=now
        )
    elif changed:
        outgoing.loop_post_by_id(
            session, post_id=post_id, channel=row.post_channel, ts=row.post_ts, now=now
        )
    if changed:
        event_on_commit(
            session,
            "answer_stored",
            f"answer {answer_id} {'edited' if row.answer_id else 'stored'} for prompt "
            f"{prompt_id} by {user_id} ({source})",
            answer_id=answer_id,
            prompt_id=prompt_id,
            user=user_id,
            source=source,
            edited=row.answer_id is not None,
        )
    return StoredAnswer(
        prompt_id=prompt_id,
        answer_id=answer_id,
        post_id=post_id,
        edited=row.answer_id is not None and changed,
        changed=changed,
    )


@dataclass(frozen=True)
class DmAnswer:
    """What a rep's DM came to (:func:`answer_by_dm`): ``outcome`` is "no_prompt", "help"
    (not three bullets), "already_answered" (no markers on an answered week), "refused"
    (``refusal`` says why) or "stored"."""

    outcome: str
    bullets: Bullets | None = None
    stored: StoredAnswer | None = None
    refusal: str | None = None


def answer_by_dm(
    session: Session, *, user_id: str, text: str, feedback_channel: str, now: datetime
) -> DmAnswer:
    """A rep typed in the bot's DM: store it as this week's answer when it is three bullets
    (an answered week needs the bullet markers, so a chat line is not taken as an edit)."""
    prompt = open_prompt_for(session, user_id=user_id, now=now)
    if prompt is None:
        return DmAnswer("no_prompt")
    answered = prompt.status == PromptStatus.ANSWERED
    bullets = parse_three_bullets(unescape_slack(text), require_markers=answered)
    if bullets is None:
        return DmAnswer("already_answered" if answered else "help")
    try:
        with session.begin_nested():
            stored = record_answer(
                session,
                prompt_id=prompt.id,
                user_id=user_id,
                bullets=bullets,
                source="dm",
                feedback_channel=feedback_channel,
                now=now,
            )
    except DomainError as err:
        return DmAnswer("refused", refusal=str(err))
    return DmAnswer("stored", bullets=bullets, stored=stored)


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
    outgoing.prompt_done(session, prompt, now=now)
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
    """Queue the one reminder; False when another run already did."""
    result = session.execute(
        update(Prompt)
        .where(Prompt.id == prompt.id, Prompt.reminded_at.is_(None))
        .values(reminded_at=now)
    )
    if cast(CursorResult, result).rowcount == 1:
        prompt.reminded_at = now
        outgoing.reminder(session, prompt, now=now)
        return True
    return False


def close_missed(session: Session, *, now: datetime) -> list[Prompt]:
    """Record unanswered prompts whose week has closed as missed (their DM says so); return
    them."""
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
        if cast(CursorResult, result).rowcount == 1:
            session.refresh(prompt)
            outgoing.prompt_done(session, prompt, now=now)
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
