"""Marketing closing the loop on a post: acknowledgements by reaction or by note."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import Acknowledgement, LoopPost, is_forgotten
from bot.services import DomainError, NotAllowed

MAX_NOTE = 3000


def post_by_message(session: Session, *, channel: str, ts: str) -> LoopPost | None:
    """The loop post Slack knows as (channel, ts), if it is one of ours."""
    return session.scalars(
        select(LoopPost).where(LoopPost.channel == channel, LoopPost.ts == ts)
    ).first()


def ensure_post(
    session: Session, *, kind: str, subject_id: int, author: str, channel: str, now: datetime
) -> LoopPost:
    """The loop post for a subject: created (to be posted) the first time, marked for an
    update in place when it already went out."""
    post = session.scalars(
        select(LoopPost).where(LoopPost.kind == kind, LoopPost.subject_id == subject_id)
    ).first()
    if post is None:
        post = LoopPost(
            kind=kind,
            subject_id=subject_id,
            author_user_id=author,
            channel=channel,
            created_at=now,
        )
        session.add(post)
    elif post.ts is not None:
        post.needs_update = True
    session.flush()
    return post


def get_post(session: Session, post_id: int) -> LoopPost:
    post = session.get(LoopPost, post_id)
    if post is None:
        raise DomainError("That post no longer exists.")
    return post


CLAIM_FOR = timedelta(minutes=2)


def claim_first_post(session: Session, *, post_id: int, now: datetime) -> bool:
    """Take the job of posting a loop post for the first time; False when another process
    is doing it (or did it). A claim older than two minutes is a crashed one."""
    result = session.execute(
        update(LoopPost)
        .where(
            LoopPost.id == post_id,
            LoopPost.ts.is_(None),
            or_(LoopPost.claimed_at.is_(None), LoopPost.claimed_at < now - CLAIM_FOR),
        )
        .values(claimed_at=now, post_attempts=LoopPost.post_attempts + 1)
    )
    return result.rowcount == 1


def claim_notification(session: Session, *, ack_id: int, now: datetime) -> bool:
    """Take the job of sending an acknowledgement's thread reply and rep DM (what is left)."""
    result = session.execute(
        update(Acknowledgement)
        .where(
            Acknowledgement.id == ack_id,
            or_(Acknowledgement.thread_ts.is_(None), Acknowledgement.rep_notified_at.is_(None)),
            or_(
                Acknowledgement.notify_claimed_at.is_(None),
                Acknowledgement.notify_claimed_at < now - CLAIM_FOR,
            ),
        )
        .values(notify_claimed_at=now, notify_attempts=Acknowledgement.notify_attempts + 1)
    )
    return result.rowcount == 1


def unfinished_notifications(session: Session, *, now: datetime, max_attempts: int) -> list[int]:
    """Acknowledgements whose thread reply or rep DM has not gone out yet."""
    return list(
        session.scalars(
            select(Acknowledgement.id).where(
                or_(Acknowledgement.thread_ts.is_(None), Acknowledgement.rep_notified_at.is_(None)),
                Acknowledgement.notify_attempts < max_attempts,
                Acknowledgement.created_at < now - CLAIM_FOR,
            )
        )
    )


def check_marketing(user_id: str, marketing_ids: Collection[str]) -> None:
    """Raise NotAllowed unless ``user_id`` is in marketing."""
    if user_id not in marketing_ids:
        raise NotAllowed(
            "Only the marketing team can close the loop on feedback. "
            "If you should be able to, ask an admin to add you to the marketing group."
        )


def acknowledge(
    session: Session,
    *,
    post: LoopPost,
    user_id: str,
    marketing_ids: Collection[str],
    now: datetime,
    note: str | None = None,
    reaction: str | None = None,
) -> Acknowledgement | None:
    """Record marketing's acknowledgement; None when this exact reaction was already counted.

    A reaction is one acknowledgement per (post, user, emoji), enforced by the database, so a
    retried event or a remove-and-re-add never posts a second thread reply. Notes always add.
    """
    check_marketing(user_id, marketing_ids)
    if is_forgotten(post.author_user_id):
        raise DomainError(
            "The author of this post has left and their data was deleted, so there is nobody "
            "to close the loop with. Nothing was recorded."
        )
    if reaction is None:
        note = (note or "").strip()
        if not note:
            raise DomainError("Please write what marketing will change.")
        if len(note) > MAX_NOTE:
            raise DomainError(f"Please keep the note under {MAX_NOTE} characters.")
    ack = Acknowledgement(
        post_id=post.id,
        user_id=user_id,
        via="reaction" if reaction else "note",
        note=note,
        dedup_key=f"reaction:{user_id}:{reaction}" if reaction else None,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(ack)
    except IntegrityError:
        return None
    session.expire(post, ["acks"])
    if post.first_ack_at is None:
        post.first_ack_at = now
    return ack
