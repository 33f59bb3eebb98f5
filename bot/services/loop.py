"""Marketing closing the loop on a post: acknowledgements by reaction or by note."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.logs import event_on_commit
from bot.models import Acknowledgement, LoopPost, PostKind, is_forgotten
from bot.services import outgoing
from bot.services.errors import DomainError, NotAllowed

MAX_NOTE = 3000


def post_by_message(session: Session, *, channel: str, ts: str) -> LoopPost | None:
    """The loop post Slack knows as (channel, ts), if it is one of ours."""
    return session.scalars(
        select(LoopPost).where(LoopPost.channel == channel, LoopPost.ts == ts)
    ).first()


def ensure_post(
    session: Session, *, kind: PostKind, subject_id: int, author: str, channel: str, now: datetime
) -> LoopPost:
    """The loop post for a subject, queued to be posted the first time, or to be brought up
    to date in its channel."""
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
    session.flush()
    outgoing.loop_post(session, post, now=now)
    return post


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
    """Record marketing's acknowledgement and queue what tells everyone: a reply in the
    post's thread, a DM to the rep, the post's "acknowledged by". None when this reaction was
    already counted.

    A reaction is one acknowledgement per (post, user, emoji), enforced by the database, so a
    retried event or a remove-and-re-add never posts a second thread reply; the emoji is the
    base one (``white_check_mark::skin-tone-2`` counts as ``white_check_mark``), so reacting
    with two skin tones is one acknowledgement. Notes always add.
    """
    check_marketing(user_id, marketing_ids)
    reaction = base_emoji(reaction)
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
    outgoing.acknowledged(session, ack, rep=post.author_user_id, now=now)
    event_on_commit(
        session,
        "acknowledgement_recorded",
        f"acknowledgement {ack.id} of post {post.id} by {user_id} ({ack.via})",
        acknowledgement_id=ack.id,
        post_id=post.id,
        user=user_id,
        via=ack.via,
    )
    return ack


def base_emoji(reaction: str | None) -> str | None:
    """The emoji without its skin tone: ``+1::skin-tone-2`` -> ``+1``."""
    return reaction.split("::", 1)[0] if reaction else None
