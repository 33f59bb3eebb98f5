"""Marketing closes the loop: the "Close the loop" button on a post, and its note form."""

from __future__ import annotations

import json
import logging

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.blocks import feedback as fb_blocks
from bot.db import in_transaction, session_scope
from bot.home_tab import changed as homes_changed
from bot.listeners.forms import keeps_form_when_database_is_away, value
from bot.runtime import Runtime
from bot.services import loop as loop_svc
from bot.services.errors import DomainError
from bot.services.loop import MAX_NOTE
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)

MARKETING_CACHE_SECONDS = 300.0  # a click uses a recent read; submitting re-checks fresh
NOT_MARKETING = (
    "Only the marketing team can close the loop on feedback, so nothing was recorded. If you "
    "should be able to, ask an admin to add you to marketing."
)
NOTE_NOT_CHECKED = (
    "Your note was not saved: Closeloop could not check with Slack who is in marketing. "
    "Your text is still here; please submit it again in a minute."
)


def open_close_loop(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """ "Close the loop": marketing gets the note form; anyone else an explanation."""
    ack()
    context["open_modal"](_open_close_loop, body, client, context["rt"])


def _open_close_loop(body: dict, client: WebClient, rt: Runtime) -> None:
    user_id = body["user"]["id"]
    post_id = int(body["actions"][0]["value"])
    if user_id not in rt.directory.marketing_ids(max_age=MARKETING_CACHE_SECONDS):
        channel = (body.get("channel") or {}).get("id")
        if channel:  # clicked in a channel: an answer to the click, to them alone
            client.chat_postEphemeral(channel=channel, user=user_id, text=NOT_MARKETING)
        else:  # clicked in the Home tab: a DM
            rt.tell(user_id, NOT_MARKETING)
        return
    with session_scope(rt.session_factory) as session:
        rep = loop_svc.get_post(session, post_id).author_user_id
    client.views_open(
        trigger_id=body["trigger_id"], view=fb_blocks.close_loop_modal(post_id=post_id, rep_id=rep)
    )


@keeps_form_when_database_is_away("note", "note")
def submit_note(ack: Ack, body: dict, view: dict, context: dict) -> None:
    """Marketing's "what we will change" note: stored before the ack (with the thread reply,
    the rep's DM and the post's update queued), or the modal stays open with the reason."""
    rt: Runtime = context["rt"]
    user_id = body["user"]["id"]
    note = value(view, "note").strip()
    if not note:
        ack(response_action="errors", errors={"note": "Please write what marketing will change."})
        return
    if len(note) > MAX_NOTE:
        ack(
            response_action="errors",
            errors={"note": f"Please keep it under {MAX_NOTE} characters."},
        )
        return
    post_id = int(json.loads(view["private_metadata"])["post_id"])
    try:
        marketing = rt.directory.marketing_ids()  # fresh: membership is checked as it stores
    except SLACK_ERRORS:
        log.exception("could not read marketing's members for %s's note", user_id)
        ack(response_action="errors", errors={"note": NOTE_NOT_CHECKED})
        return

    def store(session) -> str:
        post = loop_svc.get_post(session, post_id)
        loop_svc.acknowledge(
            session, post=post, user_id=user_id, marketing_ids=marketing, note=note, now=rt.now()
        )
        return post.author_user_id

    try:
        rep = in_transaction(rt.session_factory, store)
    except DomainError as err:  # not in marketing, the post is gone, its author forgotten
        ack(response_action="errors", errors={"note": str(err)})
        return
    ack()
    rt.send_soon()
    context["later"](homes_changed, rt, rep, marketing=True)


def register(app: App) -> None:
    app.view(fb_blocks.NOTE_CALLBACK)(submit_note)
    app.action(fb_blocks.CLOSE_LOOP_ACTION)(open_close_loop)
