"""A reaction on a loop post: ACK_EMOJI from marketing closes the loop (any skin tone)."""

from __future__ import annotations

import logging

from slack_bolt import App

from bot.db import in_transaction, session_scope
from bot.home_tab import changed as homes_changed
from bot.runtime import Runtime
from bot.services import loop as loop_svc
from bot.services.errors import DomainError

log = logging.getLogger(__name__)


def reaction_added(event: dict, context: dict) -> None:
    """Runs after the event's 200 (bot.event_inbox): it may read Slack."""
    item = event.get("item") or {}
    rt: Runtime = context["rt"]
    emoji = loop_svc.base_emoji(event.get("reaction"))
    if item.get("type") != "message" or emoji != rt.settings.ack_emoji:
        return
    user_id = event["user"]
    with session_scope(rt.session_factory) as session:
        post = loop_svc.post_by_message(session, channel=item["channel"], ts=item["ts"])
        post_id = post.id if post else None
    if post_id is None:
        return
    marketing = rt.directory.marketing_ids()  # fresh: membership is checked as it stores

    def store(session) -> str | None:
        post = loop_svc.get_post(session, post_id)
        ack = loop_svc.acknowledge(
            session,
            post=post,
            user_id=user_id,
            marketing_ids=marketing,
            reaction=emoji,
            now=rt.now(),
        )
        return post.author_user_id if ack is not None else None

    try:
        rep = in_transaction(rt.session_factory, store)
    except DomainError as err:  # not marketing: nothing stored, nothing posted publicly
        log.info("reaction from %s on post %s not counted: %s", user_id, post_id, err)
        return
    if rep is not None:
        rt.send_soon()
        homes_changed(rt, rep, marketing=True)


def register(app: App) -> None:
    app.event("reaction_added")(reaction_added)
