"""Thin Slack adapters: ack, parse the payload, hand over to bot.flows."""

from __future__ import annotations

from slack_bolt import App

from bot.listeners import actions, commands, events, views


def register_listeners(app: App) -> None:
    actions.register(app)
    views.register(app)
    events.register(app)
    commands.register(app)
