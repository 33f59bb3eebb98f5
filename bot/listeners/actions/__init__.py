"""Button clicks."""

from __future__ import annotations

import re

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import flows
from bot.blocks import feedback as fb_blocks
from bot.blocks import winloss as wl_blocks
from bot.flows import winloss as wl_flows
from bot.runtime import Runtime
from bot.services import DomainError

MARKETING_CACHE_SECONDS = 300.0  # a click uses a recent read; submitting re-checks fresh


def open_feedback_modal(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """ "Answer" / "Edit answer": open this week's form, prefilled when editing."""
    ack()
    context["open_modal"](_open_feedback, body, client, context["rt"])


def _open_feedback(body: dict, client: WebClient, rt: Runtime) -> None:
    user_id = body["user"]["id"]
    try:
        view = flows.feedback_view(rt, user_id=user_id, prompt_id=int(body["actions"][0]["value"]))
    except DomainError as err:
        rt.tell(user_id, str(err))
        return
    client.views_open(trigger_id=body["trigger_id"], view=view)


def skip_week(ack: Ack, body: dict, context: dict) -> None:
    """ "Nothing this week" / "Out this week"."""
    ack()
    action = body["actions"][0]
    reason = action["action_id"].removeprefix("feedback_skip_")
    context["later"](
        flows.skip_week,
        context["rt"],
        user_id=body["user"]["id"],
        prompt_id=int(action["value"]),
        reason=reason,
    )


def open_close_loop(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """ "Close the loop": marketing gets the note form; anyone else an ephemeral explanation."""
    ack()
    context["open_modal"](_open_close_loop, body, client, context["rt"])


def _open_close_loop(body: dict, client: WebClient, rt: Runtime) -> None:
    user_id = body["user"]["id"]
    post_id = int(body["actions"][0]["value"])
    if user_id not in rt.roster.marketing_ids(max_age=MARKETING_CACHE_SECONDS):
        text = (
            "Only the marketing team can close the loop on feedback, so nothing was "
            "recorded. If you should be able to, ask an admin to add you to marketing."
        )
        channel = (body.get("channel") or {}).get("id")
        if channel:  # clicked in a channel: an ephemeral message there
            client.chat_postEphemeral(channel=channel, user=user_id, text=text)
        else:  # clicked in the Home tab: a DM
            rt.tell(user_id, text)
        return
    client.views_open(trigger_id=body["trigger_id"], view=flows.close_loop_view(rt, post_id))


def open_winloss_modal(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """ "Log win/loss" on a nudge or in /winloss list: the form, prefilled for that deal."""
    ack()
    context["open_modal"](
        _open_winloss, body, client, context, deal_pk=int(body["actions"][0]["value"])
    )


def edit_winloss(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """ "Edit" on a win/loss post: the author (or a manager) edits for 7 days."""
    ack()
    context["open_modal"](
        _open_winloss, body, client, context, entry_id=int(body["actions"][0]["value"])
    )


def _open_winloss(body: dict, client: WebClient, context: dict, **which) -> None:
    rt: Runtime = context["rt"]
    user_id = body["user"]["id"]
    try:
        view = wl_flows.modal(rt, user_id=user_id, **which)
    except DomainError as err:
        channel = (body.get("channel") or {}).get("id")
        if channel and not channel.startswith("D"):
            client.chat_postEphemeral(channel=channel, user=user_id, text=str(err))
        else:
            rt.tell(user_id, str(err))
        return
    client.views_open(trigger_id=body["trigger_id"], view=view)


def register(app: App) -> None:
    app.action(wl_blocks.OPEN_ACTION)(open_winloss_modal)
    app.action(wl_blocks.EDIT_ACTION)(edit_winloss)
    app.action(fb_blocks.OPEN_ACTION)(open_feedback_modal)
    app.action(re.compile(r"^feedback_skip_(nothing|out)$"))(skip_week)
    app.action(fb_blocks.CLOSE_LOOP_ACTION)(open_close_loop)
