"""Events API: DM replies and reactions (each delivery is processed once, see bot.app)."""

from __future__ import annotations

from slack_bolt import App

from bot import flows
from bot.runtime import Runtime


def dm_message(event: dict, context: dict) -> None:
    """A rep typed in the bot's DM: treat it as their three bullets."""
    if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
        return
    rt: Runtime = context["rt"]
    flows.answer_from_dm(
        rt, user_id=event["user"], channel=event["channel"], text=event.get("text") or ""
    )


def reaction_added(event: dict, context: dict) -> None:
    """ACK_EMOJI on a loop post from marketing closes the loop."""
    item = event.get("item") or {}
    if item.get("type") != "message":
        return
    flows.acknowledge_reaction(
        context["rt"],
        user_id=event["user"],
        channel=item["channel"],
        ts=item["ts"],
        emoji=event["reaction"],
    )


def app_home_opened(event: dict, context: dict) -> None:
    """The Home tab was opened: show what is waiting on this person."""
    if event.get("tab", "home") != "home":
        return
    from bot.flows import home

    home.opened(context["rt"], event["user"])


def register(app: App) -> None:
    app.event("app_home_opened")(app_home_opened)
    app.event("message")(dm_message)
    app.event("reaction_added")(reaction_added)
