"""Orchestration shared by listeners, jobs and the CLI: service -> builder -> Slack Web API.

Each step that changes the database commits before the Slack call that follows it, so a
crash or a Slack failure leaves a row that the next tick retries instead of a lost message.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.blocks import feedback as fb_blocks
from bot.db import in_transaction, session_scope
from bot.flows import outbox as outbox_flow
from bot.models import (
    Acknowledgement,
    FeedbackAnswer,
    LoopPost,
    Member,
    OutboxState,
    Prompt,
    PromptStatus,
)
from bot.runtime import SLACK_ERRORS, Runtime
from bot.services import DomainError
from bot.services import feedback as feedback_svc
from bot.services import loop as loop_svc
from bot.services import outbox as outbox_svc
from bot.services import roster as roster_svc
from bot.services.feedback import Bullets, Schedule
from bot.services.outbox import Outgoing

log = logging.getLogger(__name__)

ROSTER_SYNC_EVERY = timedelta(hours=1)
POST_MARK = "closeloop_post"
ACK_REPLY_MARK = "closeloop_ack_reply"  # metadata of a thread reply: {"ack_id": id}
RETRY_AFTER = timedelta(minutes=2)


def _homes(rt: Runtime, *users: str | None, marketing: bool = False) -> None:
    from bot.flows import home

    home.changed(rt, *users, marketing=marketing)


def schedule_of(rt: Runtime) -> Schedule:
    s = rt.settings
    return Schedule(s.prompt_schedule, s.reminder_schedule, s.default_timezone)


# --- roster -------------------------------------------------------------------------------


def sync_roster(rt: Runtime) -> list[str]:
    """Read the sales team from Slack, store it, and fetch missing or stale time zones."""
    now = rt.now()
    ids = rt.roster.sales_ids()
    with session_scope(rt.session_factory) as session:
        roster_svc.set_sales_members(session, user_ids=ids, now=now)
        stale = roster_svc.needing_profile(session, now=now)
    if stale:
        _refresh_profiles(rt, stale, now=now)
    rt.last_roster_sync = now
    return ids


# More stale profiles than this are read from users.list rather than one users.info each.
# users.info is Tier 4 (100+ a minute): a 5,000-rep org's daily refresh would hold the tick
# for 50 minutes. users.list is Tier 2 (20+ a minute) with 200 people a page: 25 pages for
# 5,000 people, a few minutes at most even in a workspace of 20,000.
USERS_INFO_AT_MOST = 20


def _refresh_profiles(rt: Runtime, stale: list[str], *, now: datetime) -> None:
    found: dict[str, tuple[str | None, str | None]] = {}
    unknown: list[str] = []
    if len(stale) <= USERS_INFO_AT_MOST:
        for user_id in stale:
            try:
                found[user_id] = rt.roster.profile(user_id)
            except SLACK_ERRORS:
                # keep the zone we knew (or the default); asked again on the next sync
                log.exception("users.info for %s failed; keeping the last known time zone", user_id)
    else:
        try:
            rt.roster.profiles(stale, into=found)
        except SLACK_ERRORS:
            log.exception(
                "users.list failed; keeping the last known time zones of the %d reps not read "
                "yet until the next roster sync",
                len(stale) - len(found),
            )
        else:
            unknown = [user_id for user_id in stale if user_id not in found]
        if unknown:
            log.warning(
                "%d reps are not in users.list (for example %s); keeping their last known "
                "time zones",
                len(unknown),
                unknown[0],
            )
    with session_scope(rt.session_factory) as session:
        roster_svc.record_profiles(session, found, now=now)
        roster_svc.mark_checked(session, user_ids=unknown, now=now)


# --- prompts ------------------------------------------------------------------------------


@dataclass
class FanOut:
    sent: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_sales: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)  # in the outbox, not confirmed sent yet


ENQUEUE_CHUNK = 500  # prompts claimed and queued per transaction


def send_due_prompts(
    rt: Runtime, *, only_users: list[str] | None = None, force: bool = False, send: bool = True
) -> FanOut:
    """Prompt every rep whose prompt is due (``force``: this week's, now) exactly once.

    Each prompt row and its outbox message are written in one transaction, so a crash leaves
    either both or neither; ``send`` then drains the outbox (only the scheduler role may).
    """
    result = FanOut()
    sales = set(sync_roster(rt))
    if only_users:
        result.not_sales = [u for u in only_users if u not in sales]
    now = rt.now()
    schedule = schedule_of(rt)
    with session_scope(rt.session_factory) as session:
        reps = roster_svc.active_sales(session)
        if only_users:
            reps = [r for r in reps if r.user_id in only_users]
        due = feedback_svc.due_prompts(session, reps=reps, schedule=schedule, now=now, force=force)
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
                text, blocks = fb_blocks.prompt_message(
                    prompt_id=prompt.id, week_start=prompt.week_start
                )
                key = f"prompt:{prompt.id}"
                outbox_svc.enqueue(
                    session,
                    key=key,
                    kind="prompt",
                    channel=item.user_id,
                    text=text,
                    blocks=blocks,
                    subject_id=prompt.id,
                    expires_at=prompt.closes_at,
                    now=now,
                )
                queued[key] = item.user_id
    if send:  # also finishes what an earlier, interrupted run left in the outbox
        outbox_flow.drain(rt)
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


def _prompt_wanted(session: Session, message: Outgoing, now: datetime) -> bool:
    prompt = session.get(Prompt, message.subject_id)
    member = session.get(Member, message.channel)
    return (
        prompt is not None
        and prompt.status == PromptStatus.PENDING
        and prompt.closes_at > now
        and (member is None or member.is_sales)  # a rep who left the group is not chased
    )


def _prompt_sent(session: Session, message: Outgoing, channel: str, ts: str, now: datetime):
    prompt = session.get(Prompt, message.subject_id)
    if prompt is not None:
        feedback_svc.mark_sent(prompt, channel=channel, ts=ts, now=now)


def _prompt_refused(rt: Runtime, message: Outgoing, error: str) -> None:
    with session_scope(rt.session_factory) as session:
        prompt = session.get(Prompt, message.subject_id)
        if prompt is not None:
            feedback_svc.mark_send_failed(prompt, error=error)


def _reminder_wanted(session: Session, message: Outgoing, now: datetime) -> bool:
    prompt = session.get(Prompt, message.subject_id)
    return prompt is not None and prompt.status == PromptStatus.SENT and prompt.closes_at > now


def _reminder_sent(session: Session, message: Outgoing, channel: str, ts: str, now: datetime):
    prompt = session.get(Prompt, message.subject_id)
    if prompt is not None:
        prompt.reminder_ts = ts


outbox_flow.register(
    "prompt", outbox_flow.Kind(wanted=_prompt_wanted, sent=_prompt_sent, gave_up=_prompt_refused)
)
outbox_flow.register("reminder", outbox_flow.Kind(wanted=_reminder_wanted, sent=_reminder_sent))


def _ack_dm_sent(session: Session, message: Outgoing, channel: str, ts: str, now: datetime):
    ack = session.get(Acknowledgement, message.subject_id)
    if ack is not None:
        ack.rep_notified_at = now


outbox_flow.register("ack_dm", outbox_flow.Kind(sent=_ack_dm_sent))


def send_reminders(rt: Runtime) -> int:
    """One reminder per unanswered prompt, at the reminder time (queued in the outbox)."""
    now = rt.now()
    count = 0
    with session_scope(rt.session_factory) as session:
        for prompt in feedback_svc.due_reminders(session, now=now):
            if not feedback_svc.claim_reminder(session, prompt=prompt, now=now):
                continue
            text, blocks = fb_blocks.prompt_message(
                prompt_id=prompt.id, week_start=prompt.week_start, reminder=True
            )
            count += outbox_svc.enqueue(
                session,
                key=f"reminder:{prompt.id}",
                kind="reminder",
                channel=prompt.user_id,
                text=text,
                blocks=blocks,
                subject_id=prompt.id,
                expires_at=prompt.closes_at,
                now=now,
            )
    return count


def close_missed_weeks(rt: Runtime) -> int:
    """Record weeks that closed unanswered as missed and show it on their DM."""
    with session_scope(rt.session_factory) as session:
        missed = [
            (p.id, p.week_start, p.dm_channel, p.dm_ts)
            for p in feedback_svc.close_missed(session, now=rt.now())
        ]
    for prompt_id, _week, _channel, _ts in missed:
        refresh_prompt_dm(rt, prompt_id)
    return len(missed)


def refresh_prompt_dm(rt: Runtime, prompt_id: int) -> None:
    """Show on the prompt DM that it was answered or skipped."""
    with session_scope(rt.session_factory) as session:
        p = feedback_svc.get_prompt(session, prompt_id)
        channel, week, status, reason = p.dm_channel, p.week_start, p.status, p.skip_reason
        messages = [ts for ts in (p.dm_ts, p.reminder_ts) if ts]
    if not channel:
        return
    text, blocks = fb_blocks.prompt_done_message(
        prompt_id=prompt_id, week_start=week, status=status, skip_reason=reason
    )
    for ts in messages:  # the prompt and its reminder both stop offering the buttons
        rt.update(channel=channel, ts=ts, text=text, blocks=blocks)


# --- views --------------------------------------------------------------------------------


def feedback_view(rt: Runtime, *, user_id: str, prompt_id: int) -> dict:
    """The answer modal for a prompt, prefilled with the answer when editing."""
    with session_scope(rt.session_factory) as session:
        return _feedback_modal(feedback_svc.get_prompt(session, prompt_id), user_id)


def current_feedback_view(rt: Runtime, *, user_id: str) -> dict:
    """The modal for the caller's open prompt; DomainError when there is none.

    One session and one query (the answer joined in). ``/closeloop`` reads it after its ack
    and says "no open prompt" through the command's response_url."""
    with session_scope(rt.session_factory) as session:
        prompt = feedback_svc.open_prompt_for(
            session, user_id=user_id, now=rt.now(), with_answer=True
        )
        if prompt is None:
            raise DomainError(
                "You have no open feedback prompt right now; the next one arrives on schedule."
            )
        return _feedback_modal(prompt, user_id)


def _feedback_modal(prompt: Prompt, user_id: str) -> dict:
    feedback_svc.check_can_answer(prompt, user_id)
    answer = prompt.answer
    existing = (
        {
            "worked": answer.worked,
            "fell_flat": answer.fell_flat,
            "insight": answer.insight,
            "campaign": answer.campaign,
        }
        if answer
        else None
    )
    return fb_blocks.feedback_modal(
        prompt_id=prompt.id, week_start=prompt.week_start, answer=existing
    )


def close_loop_view(rt: Runtime, post_id: int) -> dict:
    with session_scope(rt.session_factory) as session:
        rep = loop_svc.get_post(session, post_id).author_user_id
    return fb_blocks.close_loop_modal(post_id=post_id, rep_id=rep)


# --- answers ------------------------------------------------------------------------------


def record_answer(
    session: Session, rt: Runtime, *, user_id: str, prompt_id: int, bullets: Bullets, source: str
) -> feedback_svc.StoredAnswer:
    """Store an answer in ``session`` (see feedback_svc.record_answer). Raises DomainError."""
    return feedback_svc.record_answer(
        session,
        prompt_id=prompt_id,
        user_id=user_id,
        bullets=bullets,
        source=source,
        feedback_channel=rt.settings.feedback_channel,
        now=rt.now(),
    )


def after_answer(rt: Runtime, *, user_id: str, prompt_id: int, post_id: int) -> None:
    """Slack side of an answer: mark the DM answered, post (or update) marketing's copy."""
    refresh_prompt_dm(rt, prompt_id)
    published = publish_post(rt, post_id)
    _homes(rt, user_id, marketing=True)
    if not published:
        rt.tell(
            user_id,
            f"Your answer is saved, but I could not post it to <#{rt.settings.feedback_channel}> "
            "yet (is Closeloop invited to that channel?). I will keep trying.",
        )


def answer_from_dm(rt: Runtime, *, user_id: str, channel: str, text: str) -> None:
    """A rep typed their bullets in the DM: parse, store, confirm (or explain)."""
    with session_scope(rt.session_factory) as session:
        prompt = feedback_svc.open_prompt_for(session, user_id=user_id, now=rt.now())
        prompt_id = prompt.id if prompt else None
        answered = prompt is not None and prompt.status == PromptStatus.ANSWERED
    if prompt_id is None:
        rt.post(channel=channel, text=fb_blocks.no_open_prompt()[0])
        return
    bullets = feedback_svc.parse_three_bullets(
        feedback_svc.unescape_slack(text), require_markers=answered
    )
    if bullets is None:
        help_text = fb_blocks.already_answered_help() if answered else fb_blocks.parse_help()
        rt.post(channel=channel, text=help_text[0], blocks=help_text[1])
        return
    try:
        stored = in_transaction(
            rt.session_factory,
            lambda session: record_answer(
                session, rt, user_id=user_id, prompt_id=prompt_id, bullets=bullets, source="dm"
            ),
        )
    except DomainError as err:
        rt.post(channel=channel, text=str(err))
        return
    text_, blocks = fb_blocks.answer_confirmation(
        worked=bullets.worked,
        fell_flat=bullets.fell_flat,
        insight=bullets.insight,
        edited=stored.edited,
    )
    rt.post(channel=channel, text=text_, blocks=blocks)
    after_answer(rt, user_id=user_id, prompt_id=stored.prompt_id, post_id=stored.post_id)


def skip_week(rt: Runtime, *, user_id: str, prompt_id: int, reason: str) -> None:
    """ "Nothing this week" / "Out this week"."""
    try:
        with session_scope(rt.session_factory) as session:
            prompt = feedback_svc.get_prompt(session, prompt_id)
            feedback_svc.record_skip(
                session, prompt=prompt, user_id=user_id, reason=reason, now=rt.now()
            )
    except DomainError as err:
        rt.tell(user_id, str(err))
        return
    refresh_prompt_dm(rt, prompt_id)
    _homes(rt, user_id)


# --- marketing's channel ------------------------------------------------------------------


def _post_content(session: Session, post: LoopPost) -> tuple[str, list[dict]]:
    if post.kind == "winloss":
        from bot.flows.winloss import entry_post_content

        return entry_post_content(session, post)
    answer = session.get(FeedbackAnswer, post.subject_id)
    assert answer is not None
    prompt = answer.prompt
    return fb_blocks.feedback_post(
        post_id=post.id,
        rep_id=post.author_user_id,
        week_start=prompt.week_start,
        worked=answer.worked,
        fell_flat=answer.fell_flat,
        insight=answer.insight,
        campaign=answer.campaign,
        edited=answer.edit_count > 0,
        acknowledged_by=[a.user_id for a in post.acks],
    )


def publish_post(rt: Runtime, post_id: int) -> bool:
    """Post a loop post to its channel, or update it in place; False if Slack refused.

    The first post is claimed in the database, so two callers (an edit racing the tick, two
    processes) never post it twice; a caller that loses the claim leaves ``needs_update`` so
    the winner's message is brought up to date afterwards.
    """
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        post = loop_svc.get_post(session, post_id)
        first = post.ts is None
        if first and not loop_svc.claim_first_post(session, post_id=post_id, now=now):
            post.needs_update = True
            return True
        if not first:
            post.needs_update = False
        text, blocks = _post_content(session, post)
        channel, ts, attempts = post.channel, post.ts, post.post_attempts
    if first:
        response = None
        if attempts > 1:  # an earlier try may have been posted with its answer lost
            try:
                response = rt.find_marked(
                    channel=channel, event_type=POST_MARK, key="post_id", value=post_id
                )
            except SLACK_ERRORS:
                log.exception("could not check whether post %s already went out", post_id)
                return False
        if response is None:
            marker = {"event_type": POST_MARK, "event_payload": {"post_id": post_id}}
            response = rt.post(
                channel=channel, text=text, blocks=blocks, unfurl_links=False, metadata=marker
            )
        if response is None:
            return False  # the claim expires and a later tick posts it
        with session_scope(rt.session_factory) as session:
            post = loop_svc.get_post(session, post_id)
            post.ts, post.channel, post.posted_at = response["ts"], response["channel"], now
            post.claimed_at = None
        return True
    if rt.update(channel=channel, ts=ts, text=text, blocks=blocks):
        return True
    with session_scope(rt.session_factory) as session:
        loop_svc.get_post(session, post_id).needs_update = True
    return False


def retry_unpublished_posts(rt: Runtime) -> int:
    """Posts whose channel message never went out (or whose edit failed), retried."""
    stale = rt.now() - RETRY_AFTER
    with session_scope(rt.session_factory) as session:
        ids = list(
            session.scalars(
                select(LoopPost.id).where(
                    ((LoopPost.ts.is_(None)) & (LoopPost.created_at < stale))
                    | (LoopPost.needs_update.is_(True))
                )
            )
        )
    return sum(publish_post(rt, i) for i in ids)


def record_acknowledgement(
    session: Session,
    rt: Runtime,
    *,
    user_id: str,
    post_id: int,
    marketing_ids: Collection[str],
    note: str | None = None,
    reaction: str | None = None,
) -> int | None:
    """Store marketing's acknowledgement in ``session``; its id, or None for a repeat.

    Raises NotAllowed / DomainError for the caller to show. No Slack call: a modal
    submission stores this before it answers Slack, then calls :func:`notify_ack`.
    """
    post = loop_svc.get_post(session, post_id)
    ack = loop_svc.acknowledge(
        session,
        post=post,
        user_id=user_id,
        marketing_ids=marketing_ids,
        note=note,
        reaction=reaction,
        now=rt.now(),
    )
    if ack is None:
        return None
    session.flush()
    return ack.id


def acknowledge(
    rt: Runtime,
    *,
    user_id: str,
    post_id: int,
    note: str | None = None,
    reaction: str | None = None,
) -> bool:
    """Record marketing's acknowledgement, reply in the thread, tell the rep, refresh the post.

    Raises NotAllowed / DomainError for the caller to show; returns False for a repeat.
    """
    marketing = rt.roster.marketing_ids()
    ack_id = in_transaction(
        rt.session_factory,
        lambda session: record_acknowledgement(
            session,
            rt,
            user_id=user_id,
            post_id=post_id,
            marketing_ids=marketing,
            note=note,
            reaction=reaction,
        ),
    )
    if ack_id is None:
        return False
    notify_ack(rt, ack_id)
    return True


def notify_ack(rt: Runtime, ack_id: int) -> None:
    """The thread reply and the rep's DM for one acknowledgement (whichever are still due)."""
    with session_scope(rt.session_factory) as session:
        if not loop_svc.claim_notification(session, ack_id=ack_id, now=rt.now()):
            return
        ack = session.get(Acknowledgement, ack_id)
        assert ack is not None
        post = ack.post
        subject = _subject(session, post)
        reaction = ack.dedup_key.rsplit(":", 1)[-1] if ack.dedup_key else None
        marketer, note, channel, ts, rep, post_id = (
            ack.user_id,
            ack.note,
            post.channel,
            post.ts,
            post.author_user_id,
            post.id,
        )
        need_reply, need_dm = ack.thread_ts is None, ack.rep_notified_at is None
        retrying = ack.notify_attempts > 1  # an earlier try may have reached Slack
    reply = None
    if need_reply:
        text, blocks = fb_blocks.ack_thread_reply(marketer_id=marketer, note=note, emoji=reaction)
        reply = _thread_reply(
            rt,
            ack_id=ack_id,
            channel=channel,
            thread_ts=ts,
            text=text,
            blocks=blocks,
            look_first=retrying,
        )
    with session_scope(rt.session_factory) as session:
        ack = session.get(Acknowledgement, ack_id)
        assert ack is not None
        if reply:
            ack.thread_ts = reply["ts"]
    if need_dm:  # through the outbox: sent once even when Slack's answer is lost
        text, blocks = fb_blocks.ack_rep_dm(
            marketer_id=marketer, note=note, channel=channel, subject=subject
        )
        with session_scope(rt.session_factory) as session:
            outbox_svc.enqueue(
                session,
                key=f"ack-dm:{ack_id}",
                kind="ack_dm",
                channel=rep,
                text=text,
                blocks=blocks,
                subject_id=ack_id,
                now=rt.now(),
            )
        if rt.sends_outbox:
            outbox_flow.drain(rt)
    if need_reply:
        publish_post(rt, post_id)
        _homes(rt, rep, marketing=True)
    if need_reply and not reply and not retrying:  # told once, not at every retry
        rt.tell(
            marketer,
            "Your acknowledgement is recorded, but I could not reply in the thread yet; "
            "I will keep trying.",
        )


def _thread_reply(
    rt: Runtime,
    *,
    ack_id: int,
    channel: str,
    thread_ts: str | None,
    text: str,
    blocks: list[dict],
    look_first: bool,
) -> dict | None:
    """Post an acknowledgement's thread reply exactly once; None when it is not there yet.

    The reply carries the acknowledgement's id in its metadata. A retry first looks for it
    among the thread's replies: a reply whose answer was lost (a timeout, a dropped
    connection) is recorded, not posted again; when the thread cannot be read, nothing is
    posted and the next tick tries again.
    """
    if look_first:
        try:
            found = rt.find_marked(
                channel=channel,
                thread_ts=thread_ts,
                event_type=ACK_REPLY_MARK,
                key="ack_id",
                value=ack_id,
            )
        except SLACK_ERRORS:
            log.exception(
                "could not check whether the reply for acknowledgement %s went out", ack_id
            )
            return None
        if found is not None:
            return found
    marker = {"event_type": ACK_REPLY_MARK, "event_payload": {"ack_id": ack_id}}
    return rt.post(channel=channel, thread_ts=thread_ts, text=text, blocks=blocks, metadata=marker)


def retry_ack_notifications(rt: Runtime) -> int:
    """Thread replies and rep DMs that failed, tried again (a few times)."""
    with session_scope(rt.session_factory) as session:
        ids = loop_svc.unfinished_notifications(session, now=rt.now(), max_attempts=5)
    for ack_id in ids:
        notify_ack(rt, ack_id)
    return len(ids)


def _subject(session: Session, post: LoopPost) -> str:
    """What the post is about, for the rep ("your feedback for the week of Nov 16")."""
    if post.kind == "winloss":
        from bot.flows.winloss import entry_subject

        return entry_subject(session, post)
    answer = session.get(FeedbackAnswer, post.subject_id)
    assert answer is not None
    return f"your feedback for the {fb_blocks.week_label(answer.prompt.week_start)}"


def acknowledge_reaction(rt: Runtime, *, user_id: str, channel: str, ts: str, emoji: str) -> None:
    """A reaction on a loop post: counts only for ACK_EMOJI from marketing; else nothing."""
    if emoji.split("::", 1)[0] != rt.settings.ack_emoji:  # "+1::skin-tone-2" is "+1"
        return
    with session_scope(rt.session_factory) as session:
        post = loop_svc.post_by_message(session, channel=channel, ts=ts)
        post_id = post.id if post else None
    if post_id is None:
        return
    try:
        acknowledge(rt, user_id=user_id, post_id=post_id, reaction=emoji)
    except DomainError as err:
        # Not marketing: nothing stored, nothing posted publicly.
        log.info("reaction from %s on post %s not counted: %s", user_id, post_id, err)


# --- the scheduler's tick -----------------------------------------------------------------


def tick(rt: Runtime, *, send_outbox: bool = True) -> None:
    """Everything time-driven, idempotent and safe to run often (the scheduler runs it every
    minute): events never finished, due prompts, retries, reminders, closing missed weeks,
    win/loss nudges and deadlines. ``send_outbox``: False for a process without the scheduler
    role (it queues)."""
    from bot.flows import digest, inbox
    from bot.flows import winloss as wl

    steps = (
        ("events", inbox.replay_events),
        ("deal nudges", wl.process_pending_deals),
        ("deal reminders", wl.send_deal_reminders),
        ("overdue deals", wl.escalate_overdue),
        ("prompts", _prompts_step),
        ("reminders", send_reminders),
        ("outbox", outbox_flow.drain),
        ("missed weeks", close_missed_weeks),
        ("unpublished posts", retry_unpublished_posts),
        ("acknowledgement replies", retry_ack_notifications),
        ("event memory", inbox.forget_old_events),
        ("monthly digest", digest.post_due_digest),
    )
    for name, step in steps:
        if step is outbox_flow.drain and not send_outbox:
            continue
        rt.foreground.wait_idle()  # like work after an ack, a step yields to Slack's requests
        try:
            step(rt)
        except Exception:  # one failing step must not stop the others
            log.exception("scheduled step %r failed", name)


def _prompts_step(rt: Runtime) -> None:
    now = rt.now()
    roster_due = rt.last_roster_sync is None or now - rt.last_roster_sync >= ROSTER_SYNC_EVERY
    if not roster_due:
        with session_scope(rt.session_factory) as session:
            reps = roster_svc.active_sales(session)
            if not feedback_svc.due_prompts(session, reps=reps, schedule=schedule_of(rt), now=now):
                return
    send_due_prompts(rt, send=False)  # the tick's outbox step sends them
