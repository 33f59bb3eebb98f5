"""The buttons on the Friday prompt DM: Answer (or Edit answer), Nothing this week, Out."""

from __future__ import annotations

import re

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.blocks import feedback as fb_blocks
from bot.db import session_scope
from bot.home_tab import changed as homes_changed
from bot.listeners.feedback_form import modal_for
from bot.runtime import Runtime
from bot.services import feedback as feedback_svc
from bot.services.errors import DomainError


def open_feedback_modal(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """ "Answer" / "Edit answer": open this week's form, prefilled when editing."""
    ack()
    context["open_modal"](_open_feedback, body, client, context["rt"])


def _open_feedback(body: dict, client: WebClient, rt: Runtime) -> None:
    user_id = body["user"]["id"]
    prompt_id = int(body["actions"][0]["value"])
    try:
        with session_scope(rt.session_factory) as session:
            view = modal_for(feedback_svc.get_prompt(session, prompt_id, with_answer=True), user_id)
    except DomainError as err:
        rt.tell(user_id, str(err))
        return
    client.views_open(trigger_id=body["trigger_id"], view=view)


def skip_week(ack: Ack, body: dict, context: dict) -> None:
    """ "Nothing this week" / "Out this week"."""
    ack()
    action = body["actions"][0]
    context["later"](
        _skip,
        context["rt"],
        user_id=body["user"]["id"],
        prompt_id=int(action["value"]),
        reason=action["action_id"].removeprefix("feedback_skip_"),
    )


def _skip(rt: Runtime, *, user_id: str, prompt_id: int, reason: str) -> None:
    try:
        with session_scope(rt.session_factory) as session:
            prompt = feedback_svc.get_prompt(session, prompt_id)
            feedback_svc.record_skip(
                session, prompt=prompt, user_id=user_id, reason=reason, now=rt.now()
            )
    except DomainError as err:
        rt.tell(user_id, str(err))
        return
    rt.send_soon()
    homes_changed(rt, user_id)


def register(app: App) -> None:
    app.action(fb_blocks.OPEN_ACTION)(open_feedback_modal)
    app.action(re.compile(r"^feedback_skip_(nothing|out)$"))(skip_week)
