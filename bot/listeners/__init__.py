"""Thin Slack adapters, one module per command, form or action group: parse, ack, hand the
decision to a service, and what can wait to the after-ack threads."""

from __future__ import annotations

from slack_bolt import App

from bot.listeners import (
    app_home,
    close_loop,
    closeloop_command,
    definition,
    dm_answers,
    feedback_form,
    leads,
    prompt_buttons,
    reactions,
    winloss_command,
    winloss_form,
)


def register_listeners(app: App) -> None:
    # Bolt tries listeners in the order they were added, each matcher building the
    # listener's arguments, until one matches: the slash commands and form submissions a
    # person waits on come first, so their ack does not pay for the others' matching.
    closeloop_command.register(app)
    winloss_command.register(app)
    leads.register(app)
    feedback_form.register(app)
    close_loop.register(app)
    winloss_form.register(app)
    definition.register(app)
    prompt_buttons.register(app)
    app_home.register(app)
    dm_answers.register(app)
    reactions.register(app)
