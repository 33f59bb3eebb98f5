"""What every modal submission shares: reading its values, and keeping the modal open with
an inline error when the database is away."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from slack_bolt import Ack

from bot import metrics
from bot.db import UNAVAILABLE

log = logging.getLogger(__name__)


def value(view: dict, block_id: str) -> str:
    block = view["state"]["values"].get(block_id) or {}
    element = block.get(block_id) or {}
    return element.get("value") or ""


def selected(view: dict, block_id: str) -> str | None:
    element = (view["state"]["values"].get(block_id) or {}).get(block_id) or {}
    option = element.get("selected_option") or {}
    return option.get("value")


def not_saved(what: str) -> str:
    """The inline error of a form whose input could not be stored (the database is away):
    Slack keeps the modal open with what the person typed."""
    return (
        f"Your {what} was not saved: Closeloop's database did not answer. "
        "Your text is still here; please submit it again in a minute."
    )


def keeps_form_when_database_is_away(block_id: str, what: str) -> Callable:
    """A form submission that cannot reach the database, at any read or write before its ack,
    answers an inline error on ``block_id`` (``response_action: errors``): the modal stays
    open with what the person typed, instead of closing on input that was lost."""

    def wrap(listener: Callable) -> Callable:
        @functools.wraps(listener)
        def submit(ack: Ack, body: dict, view: dict, context: dict) -> None:
            try:
                listener(ack, body, view, context)
            except UNAVAILABLE:
                log.exception("could not store %s's %s", body["user"]["id"], what)
                metrics.database_error("form")
                ack(response_action="errors", errors={block_id: not_saved(what)})

        return submit

    return wrap
