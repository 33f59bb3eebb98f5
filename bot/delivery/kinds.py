"""Every kind of message Closeloop sends, registered once at start-up (:func:`register_all`).

For each kind (bot.models.OutboxKind): how it is rendered when it is sent (from the database
as it is then, through the Block Kit builders in bot.blocks), whether it is still wanted,
and what its delivery records. The services only enqueue a kind, a subject and a recipient
(bot.services.outgoing).
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import chart
from bot.blocks import digest as digest_blocks
from bot.blocks import feedback as fb_blocks
from bot.blocks import winloss as wl_blocks
from bot.blocks.elements import escape_fit
from bot.config import Settings
from bot.delivery import kinds_definition, kinds_leads, kinds_leads_report, writeback
from bot.delivery.outbox import CHANNEL_SETUP_ERRORS, Delivered, Kind, Kinds, Wait, rendered
from bot.logs import event_on_commit
from bot.models import (
    Acknowledgement,
    Deal,
    Digest,
    FeedbackAnswer,
    LoopPost,
    Member,
    OutboxKind,
    OutboxMessage,
    PostKind,
    Prompt,
    PromptStatus,
    WinLossEntry,
    is_forgotten,
)
from bot.services import digest as digest_svc
from bot.services import feedback as feedback_svc
from bot.services import outgoing
from bot.services.calendar import zone
from bot.services.digest import Month
from bot.services.loop import base_emoji
from bot.services.outbox import FileUpload, Outgoing

Message = tuple[str, list[dict]]

log = logging.getLogger(__name__)


def register_all(kinds: Kinds, settings: Settings) -> Kinds:
    """Fill ``kinds`` with every kind of message (called once, when the runtime is built)."""
    _feedback(kinds)
    _loop(kinds, settings)
    _winloss(kinds, settings)
    _digest(kinds, settings)
    kinds_leads.register(kinds, settings)
    kinds_leads_report.register(kinds, settings)
    kinds_definition.register(kinds, settings)
    kinds.add(OutboxKind.NOTICE, Kind())  # its text is stored with it
    writeback.register(kinds, settings)  # not Slack: entries written back to the CRMs
    return kinds


def _with(message: Outgoing, content: Message, **changes) -> Outgoing:
    text, blocks = content
    return rendered(message, text=text, blocks=blocks, **changes)


# --- the Friday prompt --------------------------------------------------------------------


def _feedback(kinds: Kinds) -> None:
    def prompt(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        p = session.get(Prompt, m.subject_id)
        member = session.get(Member, m.channel)
        if p is None or p.status != PromptStatus.PENDING or p.closes_at <= now:
            return None
        if member is not None and not member.is_sales:  # left the group: not chased
            return None
        return _with(m, fb_blocks.prompt_message(prompt_id=p.id, week_start=p.week_start))

    def prompt_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        p = session.get(Prompt, m.subject_id)
        if p is not None:
            feedback_svc.mark_sent(p, channel=d.channel, ts=d.ts, now=now)
            event_on_commit(
                session,
                "prompt_sent",
                f"prompt {p.id} sent to {p.user_id}",
                prompt_id=p.id,
                user=p.user_id,
            )

    def prompt_refused(session: Session, m: Outgoing, error: str, now: datetime) -> None:
        p = session.get(Prompt, m.subject_id)
        if p is not None:
            feedback_svc.mark_send_failed(p, error=error)

    def reminder(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        p = session.get(Prompt, m.subject_id)
        if p is None or p.status != PromptStatus.SENT or p.closes_at <= now:
            return None
        content = fb_blocks.prompt_message(prompt_id=p.id, week_start=p.week_start, reminder=True)
        return _with(m, content)

    def reminder_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        p = session.get(Prompt, m.subject_id)
        if p is not None:
            p.reminder_ts = d.ts
            if p.status != PromptStatus.SENT:  # answered while it was on its way
                outgoing.prompt_done(session, p, now=now)

    def prompt_done(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        p = session.get(Prompt, m.subject_id)
        if p is None or p.status in (PromptStatus.PENDING, PromptStatus.SENT):
            return None
        content = fb_blocks.prompt_done_message(
            prompt_id=p.id, week_start=p.week_start, status=p.status, skip_reason=p.skip_reason
        )
        return _with(m, content)

    kinds.add(OutboxKind.PROMPT, Kind(render=prompt, sent=prompt_sent, refused=prompt_refused))
    kinds.add(OutboxKind.REMINDER, Kind(render=reminder, sent=reminder_sent))
    kinds.add(OutboxKind.PROMPT_DONE, Kind(render=prompt_done))


# --- marketing's channel: posts, acknowledgements -----------------------------------------


def post_content(session: Session, post: LoopPost) -> Message:
    """A loop post as it is now (a rep's feedback, or a win/loss entry)."""
    acknowledged_by = [a.user_id for a in post.acks]
    if post.kind == PostKind.WINLOSS:
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
            acknowledged_by=acknowledged_by,
        )
    answer = session.get(FeedbackAnswer, post.subject_id)
    assert answer is not None
    return fb_blocks.feedback_post(
        post_id=post.id,
        rep_id=post.author_user_id,
        week_start=answer.prompt.week_start,
        worked=answer.worked,
        fell_flat=answer.fell_flat,
        insight=answer.insight,
        campaign=answer.campaign,
        edited=answer.edit_count > 0,
        acknowledged_by=acknowledged_by,
    )


def post_subject(session: Session, post: LoopPost) -> str:
    """What the post is about, for the rep ("your feedback for the week of Nov 16")."""
    if post.kind == PostKind.WINLOSS:
        entry = session.get(WinLossEntry, post.subject_id)
        assert entry is not None
        return f"your win/loss entry for {escape_fit(entry.deal.name, 200)}"
    answer = session.get(FeedbackAnswer, post.subject_id)
    assert answer is not None
    return f"your feedback for the {fb_blocks.week_label(answer.prompt.week_start)}"


def ack_reply_content(ack: Acknowledgement) -> Message:
    # "reaction:U1:white_check_mark" (or, stored before skin tones were folded,
    # "reaction:U1:white_check_mark::skin-tone-2")
    reaction = ack.dedup_key.split(":", 2)[2] if ack.dedup_key else None
    return fb_blocks.ack_thread_reply(
        marketer_id=ack.user_id, note=ack.note, emoji=base_emoji(reaction)
    )


def _loop(kinds: Kinds, settings: Settings) -> None:
    def post(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        p = session.get(LoopPost, m.subject_id)
        if p is None or p.ts is not None:
            return None
        return _with(m, post_content(session, p), channel=p.channel)

    def post_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        p = session.get(LoopPost, m.subject_id)
        if p is not None:
            p.ts, p.channel, p.posted_at = d.ts, d.channel, now

    def post_late(session: Session, m: Outgoing, error: str, now: datetime) -> None:
        p = session.get(LoopPost, m.subject_id)
        if p is None or is_forgotten(p.author_user_id):
            return
        if p.kind == PostKind.WINLOSS:
            text = (
                f"Your win/loss entry is saved, but I could not post it to <#{p.channel}> yet "
                "(is Closeloop invited there?). I will keep trying."
            )
        else:
            text = (
                f"Your answer is saved, but I could not post it to <#{p.channel}> yet "
                "(is Closeloop invited to that channel?). I will keep trying."
            )
        outgoing.notice(
            session, user_id=p.author_user_id, text=text, now=now, key=f"post-late:{p.id}"
        )

    def post_refused(session: Session, m: Outgoing, error: str, now: datetime) -> None:
        p = session.get(LoopPost, m.subject_id)
        if p is None or is_forgotten(p.author_user_id):
            return
        what = "win/loss entry" if p.kind == PostKind.WINLOSS else "answer"
        outgoing.notice(
            session,
            user_id=p.author_user_id,
            text=f"Your {what} is saved, but Slack refused to post it to <#{p.channel}> "
            f"({error}), so marketing has not seen it. Closeloop's log has the details for "
            "your admin.",
            now=now,
            key=f"post-refused:{p.id}",
        )

    def post_edit(session: Session, m: Outgoing, now: datetime) -> Outgoing | Wait | None:
        p = session.get(LoopPost, m.subject_id)
        if p is None:
            return None
        if p.ts is None:
            return Wait()  # brought up to date once it is posted
        return _with(m, post_content(session, p), channel=p.channel, ts=p.ts)

    def ack_reply(session: Session, m: Outgoing, now: datetime) -> Outgoing | Wait | None:
        ack = session.get(Acknowledgement, m.subject_id)
        if ack is None or ack.thread_ts is not None:
            return None
        if ack.post.ts is None:
            return Wait()  # the reply goes in the post's thread
        return _with(m, ack_reply_content(ack), channel=ack.post.channel, thread_ts=ack.post.ts)

    def ack_reply_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        ack = session.get(Acknowledgement, m.subject_id)
        if ack is not None:
            ack.thread_ts = d.ts

    def ack_reply_late(session: Session, m: Outgoing, error: str, now: datetime) -> None:
        ack = session.get(Acknowledgement, m.subject_id)
        if ack is not None and not is_forgotten(ack.user_id):
            outgoing.notice(
                session,
                user_id=ack.user_id,
                text="Your acknowledgement is recorded, but I could not reply in the thread "
                "yet; I will keep trying.",
                now=now,
                key=f"ack-late:{ack.id}",
            )

    def ack_reply_edit(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        ack = session.get(Acknowledgement, m.subject_id)
        if ack is None or ack.thread_ts is None:
            return None
        return _with(m, ack_reply_content(ack), channel=ack.post.channel, ts=ack.thread_ts)

    def ack_dm(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        ack = session.get(Acknowledgement, m.subject_id)
        if ack is None or is_forgotten(ack.post.author_user_id):
            return None
        content = fb_blocks.ack_rep_dm(
            marketer_id=ack.user_id,
            note=ack.note,
            channel=ack.post.channel,
            subject=post_subject(session, ack.post),
        )
        return _with(m, content)

    def ack_dm_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        ack = session.get(Acknowledgement, m.subject_id)
        if ack is not None:
            ack.rep_notified_at = now

    kinds.add(
        OutboxKind.LOOP_POST,
        Kind(
            render=post,
            sent=post_sent,
            delayed=post_late,
            refused=post_refused,
            keep_trying=CHANNEL_SETUP_ERRORS,
        ),
    )
    kinds.add(OutboxKind.LOOP_POST_EDIT, Kind(render=post_edit))
    kinds.add(
        OutboxKind.ACK_REPLY,
        Kind(
            render=ack_reply,
            sent=ack_reply_sent,
            delayed=ack_reply_late,
            keep_trying=CHANNEL_SETUP_ERRORS,
        ),
    )
    kinds.add(OutboxKind.ACK_REPLY_EDIT, Kind(render=ack_reply_edit))
    kinds.add(OutboxKind.ACK_DM, Kind(render=ack_dm, sent=ack_dm_sent))


# --- win/loss -----------------------------------------------------------------------------


def _winloss(kinds: Kinds, settings: Settings) -> None:
    escalations = settings.winloss_escalation_channel

    def owner_zone(session: Session, user_id: str | None) -> ZoneInfo:
        member = session.get(Member, user_id) if user_id else None
        return zone(member.tz if member else None, settings.default_timezone)

    def waiting(session: Session, m: Outgoing) -> Deal | None:
        deal = session.get(Deal, m.subject_id)
        return deal if deal is not None and deal.entry is None else None

    def nudge(session: Session, m: Outgoing, now: datetime, *, reminder: bool = False):
        deal = waiting(session, m)
        if deal is None or (reminder and deal.overdue_at is not None):
            return None
        content = wl_blocks.nudge_message(
            deal_pk=deal.id,
            deal_name=deal.name,
            outcome=deal.outcome,
            deadline=wl_blocks.local_time(deal.deadline_at, owner_zone(session, m.channel)),
            reminder=reminder,
        )
        return _with(m, content)

    def reminder(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        return nudge(session, m, now, reminder=True)

    def nudge_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        deal = session.get(Deal, m.subject_id)
        if deal is not None:
            deal.nudge_channel, deal.nudge_ts = d.channel, d.ts
            if deal.entry is not None:  # logged while the nudge was on its way
                outgoing.nudge_done(session, deal, now=now)

    def nudge_refused(session: Session, m: Outgoing, error: str, now: datetime) -> None:
        deal = session.get(Deal, m.subject_id)
        if deal is not None:  # the managers are told; a deal never waits silently
            outgoing.owner_missing(session, deal, channel=escalations, now=now)

    def nudge_done(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        deal = session.get(Deal, m.subject_id)
        if deal is None:
            return None
        return _with(m, wl_blocks.logged_nudge(deal_name=deal.name))

    def owner_missing(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        deal = waiting(session, m)
        if deal is None:
            return None
        content = wl_blocks.owner_missing(
            deal_pk=deal.id,
            deal_name=deal.name,
            owner_email=deal.owner_email,
            owner_id=deal.owner_user_id,
        )
        return _with(m, content)

    def owner_missing_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        deal = session.get(Deal, m.subject_id)
        if deal is not None:
            deal.owner_missing_reported_at = now

    def overdue(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        deal = waiting(session, m)
        if deal is None:
            return None
        owner = session.get(Member, deal.owner_user_id) if deal.owner_user_id else None
        content = wl_blocks.overdue_escalation(
            deal_pk=deal.id,
            deal_name=deal.name,
            owner_id=deal.owner_user_id,
            owner_name=owner.name if owner else None,
            owner_email=deal.owner_email,
            outcome=deal.outcome,
            hours=settings.winloss_deadline_hours,
        )
        return _with(m, content)

    kinds.add(OutboxKind.DEAL_NUDGE, Kind(render=nudge, sent=nudge_sent, refused=nudge_refused))
    kinds.add(OutboxKind.DEAL_REMINDER, Kind(render=reminder))
    kinds.add(OutboxKind.NUDGE_DONE, Kind(render=nudge_done))
    kinds.add(
        OutboxKind.OWNER_MISSING,
        Kind(render=owner_missing, sent=owner_missing_sent, keep_trying=CHANNEL_SETUP_ERRORS),
    )
    kinds.add(OutboxKind.OVERDUE, Kind(render=overdue, keep_trying=CHANNEL_SETUP_ERRORS))


# --- the monthly digest -------------------------------------------------------------------


def _digest(kinds: Kinds, settings: Settings) -> None:
    tz = ZoneInfo(settings.digest_timezone)

    def digest_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        row = session.get(Digest, m.subject_id)
        if row is not None:
            row.ts, row.channel, row.posted_at = d.ts, d.channel, now
            outgoing.digest_chart(session, row, now=now)
            event_on_commit(
                session,
                "digest_posted",
                f"digest for {row.month:%Y-%m} posted in {d.channel}",
                month=f"{row.month:%Y-%m}",
                channel=d.channel,
                ts=d.ts,
            )

    def chart_file(session: Session, m: Outgoing, now: datetime) -> Outgoing | Wait | None:
        row = session.get(Digest, m.subject_id)
        if row is None or row.chart_file_id is not None:
            return None
        if row.ts is None:
            return Wait()
        month = Month(row.month.year, row.month.month)
        figures = digest_svc.compute(session, month=month, tz=tz, now=now)
        history = digest_svc.win_rate_history(session, month, tz)
        try:
            png = chart.render(
                month=str(month), history=history, losses=figures["losses_by_competitor"]
            )
        except Exception:  # drawing it again would fail again: say so, stop promising it
            log.exception("the %s digest chart could not be drawn; the digest says so", month)
            no_chart(session, row, digest_blocks.NO_CHART, now)
            return None
        upload = FileUpload(
            content=png,
            filename=f"closeloop-digest-{month}.png",
            title=f"Win rate by month and losses by competitor, {month}",
            alt_text=f"Win rate by month for the six months to {month}, and losses by competitor",
        )
        return rendered(m, file=upload, channel=row.channel, thread_ts=row.ts)

    def no_chart(session: Session, row: Digest, instead: str, now: datetime) -> None:
        """The posted digest edited to say ``instead`` where it promised the chart."""
        posted = session.scalar(
            select(OutboxMessage).where(OutboxMessage.key == f"digest:{row.month:%Y-%m}")
        )
        if posted is not None and posted.blocks:
            outgoing.digest_edit(
                session,
                row,
                text=posted.text,
                blocks=digest_blocks.without_chart_promise(posted.blocks, instead),
                now=now,
            )

    def chart_refused(session: Session, m: Outgoing, error: str, now: datetime) -> None:
        """Slack refused the upload for good (a missing scope: files:write): the failure is
        recorded with the message, logged, and the digest stops promising the chart."""
        row = session.get(Digest, m.subject_id)
        if row is None:
            return
        log.error(
            "the %s digest chart was refused by Slack (%s); the digest says so. "
            "closeloop check says how to fix it",
            f"{row.month:%Y-%m}",
            error,
        )
        why = error.removeprefix("HTTP 200 ")  # "missing_scope files:write"
        no_chart(session, row, digest_blocks.CHART_REFUSED.format(why=why), now)

    def chart_sent(session: Session, m: Outgoing, d: Delivered, now: datetime) -> None:
        row = session.get(Digest, m.subject_id)
        if row is not None:
            row.chart_file_id = d.file_id or "uploaded"

    def missed(session: Session, m: Outgoing, now: datetime) -> Outgoing | Wait | None:
        row = session.get(Digest, m.subject_id)
        if row is None or is_forgotten(m.channel):
            return None
        if row.ts is None:
            return Wait()  # the note points to the digest: it goes out once that is posted
        month = Month(row.month.year, row.month.month)
        weeks = digest_svc.missed_weeks(session, month, user_id=m.channel, now=now)
        if not weeks:  # nothing missed after all (an answer recorded late): no note
            return None
        return _with(
            m, digest_blocks.missed_weeks_dm(month=str(month), weeks=weeks, channel=row.channel)
        )

    kinds.add(OutboxKind.DIGEST, Kind(sent=digest_sent, keep_trying=CHANNEL_SETUP_ERRORS))
    kinds.add(
        OutboxKind.DIGEST_CHART, Kind(render=chart_file, sent=chart_sent, refused=chart_refused)
    )
    kinds.add(OutboxKind.DIGEST_EDIT, Kind())  # its text and blocks are stored with it
    kinds.add(OutboxKind.DIGEST_MISSED, Kind(render=missed))
