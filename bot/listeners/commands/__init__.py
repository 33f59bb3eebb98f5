"""Slash commands."""

from __future__ import annotations

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import flows
from bot.blocks import winloss as wl_blocks
from bot.flows import winloss as wl_flows
from bot.runtime import Runtime
from bot.services import DomainError

HELP = (
    "*Closeloop* sends sales reps three questions every Friday and takes the answers to "
    "marketing.\n"
    "• `/closeloop` opens this week's feedback form (or edits your answer)\n"
    "• `/closeloop help` shows this\n"
    "You can also reply to the Friday DM with three bullet lines."
)


def closeloop_command(ack: Ack, command: dict, client: WebClient, context: dict) -> None:
    """``/closeloop [help]``."""
    text = (command.get("text") or "").strip().lower()
    if text not in ("", "answer", "feedback"):
        ack(text=HELP)
        return
    rt: Runtime = context["rt"]
    try:
        view = flows.current_feedback_view(rt, user_id=command["user_id"])  # one indexed read
    except DomainError as err:
        ack(text=str(err))  # ephemeral, works in any channel
        return
    ack()
    client.views_open(trigger_id=command["trigger_id"], view=view)


def winloss_command(ack: Ack, command: dict, client: WebClient, context: dict) -> None:
    """``/winloss`` opens the form; ``/winloss list`` the caller's waiting deals; ``help``."""
    rt: Runtime = context["rt"]
    text = (command.get("text") or "").strip().lower()
    user_id = command["user_id"]
    if text == "list":
        message, blocks = wl_flows.waiting_list(rt, user_id=user_id)
        ack(text=message, blocks=blocks)
        return
    if text:
        ack(text=wl_blocks.HELP)
        return
    ack()  # first: the trigger_id lives 3 seconds from the command, not from our answer
    client.views_open(trigger_id=command["trigger_id"], view=wl_flows.modal(rt, user_id=user_id))


def register(app: App) -> None:
    app.command("/closeloop")(closeloop_command)
    app.command("/winloss")(winloss_command)
