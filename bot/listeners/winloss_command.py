"""``/winloss``: opens the form (or, when deals wait for the caller, asks which one first);
``/winloss list``: the caller's deals waiting for an entry."""

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
    # Deals the CRM sent are logged from their own "Log it" (the form then belongs to that
    # deal); a blank form would store a second deal and leave the CRM's one waiting.
    waiting = _waiting_rows(rt, user_id=user_id, manager=False)
    if waiting:
        message, blocks = wl_blocks.waiting_list(waiting, another=True)
        ack(text=message, blocks=blocks)
        return
    ack()  # first: the trigger_id lives 3 seconds from the command, not from our answer
    trigger_id = command["trigger_id"]
    context["open_modal"](
        lambda: client.views_open(trigger_id=trigger_id, view=modal(rt, user_id=user_id))
    )


def waiting_list(rt: Runtime, *, user_id: str) -> tuple[str, list[dict]]:
    """The caller's deals still waiting for an entry (a manager's: everyone's)."""
    manager = user_id in rt.settings.sales_managers
    return wl_blocks.waiting_list(_waiting_rows(rt, user_id=user_id, manager=manager))


def _waiting_rows(rt: Runtime, *, user_id: str, manager: bool) -> list[tuple[int, str, str, bool]]:
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        tz = user_zone(session, rt, user_id)
        return [
            (d.id, d.name, wl_blocks.local_time(d.deadline_at, tz), d.deadline_at <= now)
            for d in wl_svc.waiting_deals(session, user_id=user_id, manager=manager)
        ]


def open_blank_form(ack: Ack, body: dict, client: WebClient, context: dict) -> None:
    """ "Another deal" under a bare /winloss's list: the blank form, for a deal the CRM did
    not send."""
    ack()
    rt: Runtime = context["rt"]
    user_id, trigger_id = body["user"]["id"], body["trigger_id"]
    context["open_modal"](
        lambda: client.views_open(trigger_id=trigger_id, view=modal(rt, user_id=user_id))
    )


def register(app: App) -> None:
    app.command("/winloss")(winloss_command)
    app.action(wl_blocks.OPEN_BLANK_ACTION)(open_blank_form)
