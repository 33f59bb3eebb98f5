"""What Slack must be told, put in the outbox by the services in the same transaction as
the change it reports. Only the subject and the recipient are stored here: the content is
rendered from the database when the message is sent (bot.delivery.kinds), so a message
always shows its subject as it is then. One key per message makes each one idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.models import (
    Acknowledgement,
    Deal,
    Digest,
    Lead,
    LeadReport,
    LoopPost,
    Op,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    Prompt,
    WinLossEntry,
)
from bot.services import outbox

EDIT_FOR = timedelta(days=7)  # an edit waiting for its message to be posted gives up after


def prompt(session: Session, p: Prompt, *, now: datetime) -> bool:
    return outbox.enqueue(
        session,
        key=f"prompt:{p.id}",
        kind=OutboxKind.PROMPT,
        channel=p.user_id,
        subject_id=p.id,
        expires_at=p.closes_at,
        now=now,
    )


def reminder(session: Session, p: Prompt, *, now: datetime) -> bool:
    return outbox.enqueue(
        session,
        key=f"reminder:{p.id}",
        kind=OutboxKind.REMINDER,
        channel=p.user_id,
        subject_id=p.id,
        expires_at=p.closes_at,
        now=now,
    )


def prompt_done(session: Session, p: Prompt, *, now: datetime) -> None:
    """The prompt DM (and its reminder) stop offering the buttons: answered, skipped or
    missed, whichever the prompt is when the edit is sent."""
    prompt_done_by_id(
        session, prompt_id=p.id, channel=p.dm_channel, stamps=(p.dm_ts, p.reminder_ts), now=now
    )


def prompt_done_by_id(
    session: Session,
    *,
    prompt_id: int,
    channel: str | None,
    stamps: tuple[str | None, ...],
    now: datetime,
) -> None:
    for ts in stamps:
        if ts and channel:
            outbox.enqueue(
                session,
                key=f"prompt-done:{prompt_id}:{ts}",
                kind=OutboxKind.PROMPT_DONE,
                op=Op.UPDATE,
                channel=channel,
                ts=ts,
                subject_id=prompt_id,
                now=now,
                again=True,
            )


def loop_post(session: Session, post: LoopPost, *, now: datetime) -> None:
    """Post ``post`` in its channel, or bring the posted message up to date."""
    loop_post_by_id(session, post_id=post.id, channel=post.channel, ts=post.ts, now=now)


def loop_post_by_id(
    session: Session, *, post_id: int, channel: str, ts: str | None, now: datetime
) -> None:
    if ts is None:
        outbox.enqueue(
            session,
            key=f"post:{post_id}",
            kind=OutboxKind.LOOP_POST,
            channel=channel,
            subject_id=post_id,
            now=now,
        )
        # Changed while its first post is being sent, with what may be the older version:
        # bring it up to date once it is posted (a pending post renders the newest anyway).
        state = session.scalar(  # locked: a claim under way commits before this reads
            select(OutboxMessage.state)
            .where(OutboxMessage.key == f"post:{post_id}")
            .with_for_update()
        )
        if state != OutboxState.SENDING:
            return
    outbox.enqueue(
        session,
        key=f"post-edit:{post_id}",
        kind=OutboxKind.LOOP_POST_EDIT,
        op=Op.UPDATE,
        channel=channel,
        ts=ts,
        subject_id=post_id,
        expires_at=now + EDIT_FOR,
        now=now,
        again=True,
    )


def acknowledged(session: Session, ack: Acknowledgement, *, rep: str, now: datetime) -> None:
    """Marketing closed the loop: a reply in the post's thread, the rep told, the post's
    "acknowledged by" brought up to date."""
    post = ack.post
    outbox.enqueue(
        session,
        key=f"ack-reply:{ack.id}",
        kind=OutboxKind.ACK_REPLY,
        channel=post.channel,
        subject_id=ack.id,
        now=now,
    )
    outbox.enqueue(
        session,
        key=f"ack-dm:{ack.id}",
        kind=OutboxKind.ACK_DM,
        channel=rep,
        subject_id=ack.id,
        now=now,
    )
    loop_post(session, post, now=now)


def ack_reply_edit(session: Session, ack: Acknowledgement, *, now: datetime) -> None:
    if ack.thread_ts is None:
        return  # not posted yet: the reply itself renders the acknowledgement as it is now
    outbox.enqueue(
        session,
        key=f"ack-reply-edit:{ack.id}",
        kind=OutboxKind.ACK_REPLY_EDIT,
        op=Op.UPDATE,
        channel=ack.post.channel,
        ts=ack.thread_ts,
        subject_id=ack.id,
        now=now,
        again=True,
    )


def notice(
    session: Session,
    *,
    user_id: str,
    text: str,
    now: datetime,
    blocks: list | None = None,
    key: str | None = None,
) -> bool:
    """A one-off DM to ``user_id`` with this content (rendered by the caller's builder);
    ``key``: once per key (a reply to a Slack event is keyed by the event)."""
    return outbox.enqueue(
        session,
        key=f"notice:{key or uuid.uuid4().hex}"[:120],
        kind=OutboxKind.NOTICE,
        channel=user_id,
        text=text,
        blocks=blocks,
        now=now,
    )


def deal_nudge(session: Session, deal: Deal, *, owner: str, now: datetime) -> bool:
    return outbox.enqueue(
        session,
        key=f"deal-nudge:{deal.id}",
        kind=OutboxKind.DEAL_NUDGE,
        channel=owner,
        subject_id=deal.id,
        now=now,
    )


def deal_reminder(session: Session, deal: Deal, *, now: datetime) -> bool:
    return outbox.enqueue(
        session,
        key=f"deal-reminder:{deal.id}",
        kind=OutboxKind.DEAL_REMINDER,
        channel=deal.owner_user_id or "",
        subject_id=deal.id,
        expires_at=deal.deadline_at,
        now=now,
    )


def nudge_done(session: Session, deal: Deal, *, now: datetime) -> None:
    if deal.nudge_channel and deal.nudge_ts:
        outbox.enqueue(
            session,
            key=f"nudge-done:{deal.id}",
            kind=OutboxKind.NUDGE_DONE,
            op=Op.UPDATE,
            channel=deal.nudge_channel,
            ts=deal.nudge_ts,
            subject_id=deal.id,
            now=now,
            again=True,
        )


def owner_missing(session: Session, deal: Deal, *, channel: str, now: datetime) -> bool:
    return outbox.enqueue(
        session,
        key=f"owner-missing:{deal.id}",
        kind=OutboxKind.OWNER_MISSING,
        channel=channel,
        subject_id=deal.id,
        now=now,
    )


def overdue(session: Session, deal: Deal, *, channel: str, now: datetime) -> bool:
    return outbox.enqueue(
        session,
        key=f"overdue:{deal.id}",
        kind=OutboxKind.OVERDUE,
        channel=channel,
        subject_id=deal.id,
        now=now,
    )


def lead_report(
    session: Session, row: LeadReport, *, text: str, blocks: list, now: datetime
) -> bool:
    """The Monday lead report as computed now (a snapshot, like the digest); once a week."""
    return outbox.enqueue(
        session,
        key=f"lead-report:{row.week_start.isoformat()}",
        kind=OutboxKind.LEAD_REPORT,
        channel=row.channel,
        text=text,
        blocks=blocks,
        subject_id=row.id,
        now=now,
    )


def digest(session: Session, row: Digest, *, text: str, blocks: list, now: datetime) -> bool:
    """The digest as computed now (its figures are a snapshot of the moment it was asked)."""
    return outbox.enqueue(
        session,
        key=f"digest:{row.month:%Y-%m}",
        kind=OutboxKind.DIGEST,
        channel=row.channel,
        text=text,
        blocks=blocks,
        subject_id=row.id,
        now=now,
    )


def digest_chart(session: Session, row: Digest, *, now: datetime) -> bool:
    return outbox.enqueue(
        session,
        key=f"digest-chart:{row.month:%Y-%m}",
        kind=OutboxKind.DIGEST_CHART,
        op=Op.UPLOAD,
        channel=row.channel,
        thread_ts=row.ts,
        subject_id=row.id,
        now=now,
    )


def digest_missed(session: Session, row: Digest, *, user_id: str, now: datetime) -> bool:
    """A rep told privately which of the digest month's weeks they missed; once per rep
    and month (the digest itself names nobody for it)."""
    return outbox.enqueue(
        session,
        key=f"digest-missed:{row.month:%Y-%m}:{user_id}",
        kind=OutboxKind.DIGEST_MISSED,
        channel=user_id,
        subject_id=row.id,
        now=now,
    )


def digest_edit(session: Session, row: Digest, *, text: str, blocks: list, now: datetime) -> bool:
    """The posted digest replaced by ``text`` and ``blocks`` (once per month)."""
    return outbox.enqueue(
        session,
        key=f"digest-edit:{row.month:%Y-%m}",
        kind=OutboxKind.DIGEST_EDIT,
        op=Op.UPDATE,
        channel=row.channel,
        ts=row.ts,
        text=text,
        blocks=blocks,
        subject_id=row.id,
        now=now,
    )


def writeback_crm(external_id: str | None, crms: Collection[str]) -> str | None:
    """The CRM of a deal's ``external_id`` ("hubspot:9001" -> "hubspot") when it is one of
    ``crms`` (those with write-back on); else None (Salesforce, the generic webhook, none)."""
    crm, sep, deal_id = (external_id or "").partition(":")
    return crm if sep and deal_id and crm in crms else None


def crm_writeback(
    session: Session, entry: WinLossEntry, *, crms: Collection[str], now: datetime
) -> bool:
    """The entry's words and category written back to its CRM deal, when that CRM has
    write-back on. One message per entry: logging it and every edit enqueue it ``again``,
    so a write under way with older words is made once more afterwards, and a pending one
    sends the latest (it is rendered when it is sent)."""
    crm = writeback_crm(entry.deal.external_id, crms)
    if crm is None:
        return False
    return outbox.enqueue(
        session,
        key=f"crm-writeback:{entry.id}",
        kind=OutboxKind.CRM_WRITEBACK,
        op=Op.CALL,
        channel=crm,
        subject_id=entry.id,
        now=now,
        again=True,
    )


# The record a lead is in each CRM with lead write-back ("hubspot:contact:51",
# "pipedrive:lead:<uuid>"); Salesforce's leads have no API token here: none.
LEAD_RECORDS = {"hubspot": "contact", "pipedrive": "lead"}


def lead_record(external_id: str | None, crms: Collection[str]) -> tuple[str, str] | None:
    """The CRM and the record's id of a lead's ``external_id`` ("hubspot:contact:51" ->
    ("hubspot", "51")) when that CRM is one of ``crms`` (those with lead write-back on);
    else None (Salesforce, the generic hook, a lead from Slack, another kind of record)."""
    crm, _, rest = (external_id or "").partition(":")
    record, sep, record_id = rest.partition(":")
    if crm in crms and LEAD_RECORDS.get(crm) == record and sep and record_id:
        return crm, record_id
    return None


def lead_writeback(session: Session, lead: Lead, *, crms: Collection[str], now: datetime) -> bool:
    """The lead's latest rating written back to its CRM record, when that CRM has lead
    write-back on. One message per lead, enqueued ``again`` with every rating, so a change
    made while a write is under way is written once more afterwards, and a pending one
    sends the latest (it is rendered when it is sent)."""
    found = lead_record(lead.external_id, crms)
    if found is None:
        return False
    return outbox.enqueue(
        session,
        key=f"lead-writeback:{lead.id}",
        kind=OutboxKind.LEAD_WRITEBACK,
        op=Op.CALL,
        channel=found[0],
        subject_id=lead.id,
        now=now,
        again=True,
    )
