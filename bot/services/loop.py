"""Marketing closing the loop on a post: acknowledgements by reaction or by note."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import Acknowledgement, LoopPost
from bot.services import DomainError, NotAllowed

MAX_NOTE = 3000


def post_by_message(session: Session, *, channel: str, ts: str) -> LoopPost | None:
    """The loop post Slack knows as (channel, ts), if it is one of ours."""
    return session.scalars(
        select(LoopPost).where(LoopPost.channel == channel, LoopPost.ts == ts)
    ).first()


def get_post(session: Session, post_id: int) -> LoopPost:
    post = session.get(LoopPost, post_id)
    if post is None:
        raise DomainError("That post no longer exists.")
    return post


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
