"""The Home tab was opened: show what is waiting on this person."""

from __future__ import annotations

from slack_bolt import App

from bot import home_tab


def app_home_opened(event: dict, context: dict) -> None:
    if event.get("tab", "home") == "home":
        home_tab.opened(context["rt"], event["user"])


def register(app: App) -> None:
    app.event("app_home_opened")(app_home_opened)
