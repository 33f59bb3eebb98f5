"""Modal submissions: validate before ack (inline errors), slow Slack work after."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from datetime import date

from slack_bolt import Ack, App

from bot import flows
from bot.blocks import feedback as fb_blocks
from bot.blocks import winloss as wl_blocks
from bot.db import UNAVAILABLE, in_transaction
from bot.flows import winloss as wl_flows
from bot.runtime import SLACK_ERRORS, Runtime
from bot.services import DomainError
from bot.services import feedback as feedback_svc
from bot.services import winloss as wl_svc
from bot.services.feedback import Bullets
from bot.services.loop import MAX_NOTE

log = logging.getLogger(__name__)


def _value(view: dict, block_id: str) -> str:
    block = view["state"]["values"].get(block_id) or {}
    element = block.get(block_id) or {}
    return element.get("value") or ""


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
                ack(response_action="errors", errors={block_id: not_saved(what)})

        return submit

    return wrap


@keeps_form_when_database_is_away("worked", "answer")
def submit_feedback(ack: Ack, body: dict, view: dict, context: dict) -> None:
    """The answer modal: store (or edit) this week's answer, then tell Slack."""
    rt: Runtime = context["rt"]
    user_id = body["user"]["id"]
    prompt_id = int(json.loads(view["private_metadata"])["prompt_id"])
    bullets = Bullets(
        worked=_value(view, "worked"),
        fell_flat=_value(view, "fell_flat"),
        insight=_value(view, "insight"),
        campaign=_value(view, "campaign") or None,
    )
    errors = feedback_svc.validate_bullets(bullets)
    if errors:
        ack(response_action="errors", errors=errors)
        return
    try:
        stored = in_transaction(
            rt.session_factory,
            lambda session: flows.record_answer(
                session, rt, user_id=user_id, prompt_id=prompt_id, bullets=bullets, source="modal"
            ),
        )
    except DomainError as err:
        ack(response_action="errors", errors={"worked": str(err)})
        return
    ack()
    context["later"](
        flows.after_answer, rt, user_id=user_id, prompt_id=stored.prompt_id, post_id=stored.post_id
    )


NOTE_NOT_CHECKED = (
    "Your note was not saved: Closeloop could not check with Slack who is in marketing. "
    "Your text is still here; please submit it again in a minute."
)


@keeps_form_when_database_is_away("note", "note")
def submit_note(ack: Ack, body: dict, view: dict, context: dict) -> None:
    """Marketing's "what we will change" note: store it, then tell Slack, then reply in the
    thread and tell the rep. A note that cannot be stored keeps the modal open, with the
    marketer's text and the reason, instead of closing it on a note that was lost."""
    rt: Runtime = context["rt"]
    user_id = body["user"]["id"]
    note = _value(view, "note").strip()
    if not note:
        ack(response_action="errors", errors={"note": "Please write what marketing will change."})
        return
    if len(note) > MAX_NOTE:
        ack(
            response_action="errors",
            errors={"note": f"Please keep it under {MAX_NOTE} characters."},
        )
        return
    post_id = int(json.loads(view["private_metadata"])["post_id"])
    try:
        marketing = rt.roster.marketing_ids()  # fresh: membership is checked as it stores
    except SLACK_ERRORS:
        log.exception("could not read marketing's members for %s's note", user_id)
        ack(response_action="errors", errors={"note": NOTE_NOT_CHECKED})
        return
    try:
        ack_id = in_transaction(
            rt.session_factory,
            lambda session: flows.record_acknowledgement(
                session, rt, user_id=user_id, post_id=post_id, marketing_ids=marketing, note=note
            ),
        )
    except DomainError as err:  # not in marketing, the post is gone, its author forgotten
        ack(response_action="errors", errors={"note": str(err)})
        return
    ack()
    if ack_id is not None:  # a note always adds one; None only for a repeated reaction
        context["later"](flows.notify_ack, rt, ack_id)


def _selected(view: dict, block_id: str) -> str | None:
    element = (view["state"]["values"].get(block_id) or {}).get(block_id) or {}
    option = element.get("selected_option") or {}
    return option.get("value")


@keeps_form_when_database_is_away("reason", "entry")
def submit_winloss(ack: Ack, body: dict, view: dict, context: dict) -> None:
    """The /winloss form: refuse shorthand reasons inline, store, then post for marketing."""
    rt: Runtime = context["rt"]
    user_id = body["user"]["id"]
    meta = json.loads(view.get("private_metadata") or "{}")
    if meta.get("deal") is not None:  # someone else's deal: refused before anything is read
        try:
            wl_flows.check_may_log(rt, user_id=user_id, deal_pk=int(meta["deal"]))
        except DomainError as err:
            ack(response_action="errors", errors={"reason": str(err)})
            return
    values = view["state"]["values"]
    errors: dict[str, str] = {}
    try:
        amount = wl_svc.parse_amount(_value(view, "amount"))
    except DomainError:
        amount, errors["amount"] = None, "Please enter a number."
    today = wl_flows.today_for(rt, user_id)
    closed_text = ((values.get("closed_on") or {}).get("closed_on") or {}).get("selected_date")
    closed_on = date.fromisoformat(closed_text) if closed_text else today
    picked = _selected(view, "competitor")
    typed = _value(view, "competitor_new").strip()
    entry_in = wl_svc.EntryIn(
        deal_name=_value(view, "deal_name"),
        outcome=_selected(view, "outcome") or "",
        reason=_value(view, "reason"),
        reason_category=_selected(view, "reason_category"),
        competitor=typed or (None if picked in (None, wl_blocks.NONE_VALUE) else picked),
        insight=_value(view, "insight"),
        closed_on=closed_on,
        amount=amount,
        source=_value(view, "source") or None,
        deal_pk=meta.get("deal"),
    )
    errors.update(
        wl_svc.validate_entry(entry_in, categories=rt.settings.reason_categories, today=today)
    )
    if errors:
        ack(response_action="errors", errors=errors)
        return
    try:
        _entry_id, post_id, deal_pk = in_transaction(
            rt.session_factory,
            lambda session: wl_flows.save_entry(session, rt, user_id=user_id, entry_in=entry_in),
        )
    except DomainError as err:
        ack(response_action="errors", errors={"reason": str(err)})
        return
    ack()
    context["later"](wl_flows.after_entry, rt, user_id=user_id, post_id=post_id, deal_pk=deal_pk)


def register(app: App) -> None:
    app.view(wl_blocks.SUBMIT_CALLBACK)(submit_winloss)
    app.view(fb_blocks.SUBMIT_CALLBACK)(submit_feedback)
    app.view(fb_blocks.NOTE_CALLBACK)(submit_note)
