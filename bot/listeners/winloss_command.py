"""``/winloss``: opens the form; ``/winloss list``: the caller's deals waiting for an entry."""

from __future__ import annotations

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.blocks import winloss as wl_blocks
from bot.db import session_scope
from bot.listeners.winloss_form import modal
from bot.people import user_zone
from bot.runtime import Runtime
from bot.services import winloss as wl_svc


def winloss_command(ack: Ack, command: dict, client: WebClient, context: dict) -> None:
    """``/winloss`` opens the form; ``/winloss list`` the caller's waiting deals; ``help``."""
    rt: Runtime = context["rt"]
    text = (command.get("text") or "").strip().lower()
    user_id = command["user_id"]
    if text == "list":
        message, blocks = waiting_list(rt, user_id=user_id)
        ack(text=message, blocks=blocks)
        return
    if text:
        ack(text=wl_blocks.HELP)
        return
    ack()  # first: the trigger_id lives 3 seconds from the command, not from our answer
    trigger_id = command["trigger_id"]
    context["open_modal"](
        lambda: client.views_open(trigger_id=trigger_id, view=modal(rt, user_id=user_id))
    )


def waiting_list(rt: Runtime, *, user_id: str) -> tuple[str, list[dict]]:
    """The caller's deals still waiting for an entry."""
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        tz = user_zone(session, rt, user_id)
        rows = [
            (d.id, d.name, wl_blocks.local_time(d.deadline_at, tz), d.deadline_at <= now)
            for d in wl_svc.waiting_deals(
                session, user_id=user_id, manager=user_id in rt.settings.sales_managers
            )
        ]
    return wl_blocks.waiting_list(rows)


def register(app: App) -> None:
    app.command("/winloss")(winloss_command)
