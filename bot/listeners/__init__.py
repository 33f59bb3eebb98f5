"""Thin Slack adapters: ack, parse the payload, hand over to bot.flows."""

from __future__ import annotations

from slack_bolt import App

from bot.listeners import actions, commands, events, views


def register_listeners(app: App) -> None:
    # Bolt tries listeners in the order they were added, each matcher building the
    # listener's arguments, until one matches: the slash commands and form submissions a
    # person waits on come first, so their ack does not pay for the others' matching.
    commands.register(app)
    views.register(app)
    actions.register(app)
    events.register(app)
