"""``/closeloop``: opens this week's answer form (or edits the answer); ``help``; ``admin``."""

from __future__ import annotations

import re

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.db import session_scope
from bot.listeners import admin_command
from bot.listeners import definition as definition_listener
from bot.listeners.feedback_form import modal_for
from bot.runtime import Runtime
from bot.services import feedback as feedback_svc

HELP = (
    "*Closeloop* sends sales reps three questions every Friday and takes the answers to "
    "marketing.\n"
    "• `/closeloop` opens this week's feedback form (or edits your answer)\n"
    "• `/closeloop help` shows this\n"
    "• `/closeloop admin` lists the admin commands (for the people in ADMIN_USERS)\n"
    "• `/closeloop definition` shows the definition of a qualified lead (`help` for more)\n"
    "You can also reply to the Friday DM with three bullet lines."
)
NO_OPEN_PROMPT = "You have no open feedback prompt right now; the next one arrives on schedule."


def closeloop_command(
    ack: Ack, command: dict, client: WebClient, context: dict, respond: Respond
) -> None:
    """``/closeloop [help]``; ``/closeloop admin ...`` for admins."""
    raw = (command.get("text") or "").strip()
    first, *rest = re.split(r"\s+", raw, maxsplit=1)
    if first.lower() == "admin":
        admin_command.run(
            ack,
            respond,
            context["rt"],
            context["later"],
            user_id=command["user_id"],
            text=rest[0] if rest else "",
        )
        return
    if first.lower() == "definition":
        definition_listener.run(
            ack,
            client,
            context,
            user_id=command["user_id"],
            trigger_id=command["trigger_id"],
            text=rest[0] if rest else "",
        )
        return
    if raw.lower() not in ("", "answer", "feedback"):
        ack(text=HELP)
        return
    ack()  # before any database work: the form opens after the ack (its trigger_id lives 3 s)
    rt: Runtime = context["rt"]
    user_id, trigger_id = command["user_id"], command["trigger_id"]

    def open_form() -> None:
        with session_scope(rt.session_factory) as session:
            prompt = feedback_svc.open_prompt_for(
                session, user_id=user_id, now=rt.now(), with_answer=True
            )
            view = modal_for(prompt, user_id) if prompt is not None else None
        if view is None:
            respond(text=NO_OPEN_PROMPT, response_type="ephemeral")
            return
        client.views_open(trigger_id=trigger_id, view=view)

    context["open_modal"](open_form)


def register(app: App) -> None:
    app.command("/closeloop")(closeloop_command)
