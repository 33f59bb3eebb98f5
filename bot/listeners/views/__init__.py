"""Modal submissions: validate before ack (inline errors), slow Slack work after."""

from __future__ import annotations

import json

from slack_bolt import Ack, App

from bot import flows
from bot.blocks import feedback as fb_blocks
from bot.db import session_scope
from bot.runtime import Runtime
from bot.services import DomainError
from bot.services import feedback as feedback_svc
from bot.services.feedback import Bullets
from bot.services.loop import MAX_NOTE


def _value(view: dict, block_id: str) -> str:
    block = view["state"]["values"].get(block_id) or {}
    element = block.get(block_id) or {}
    return element.get("value") or ""


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
        with session_scope(rt.session_factory) as session:
            prompt_id, post_id, _edited = flows.record_answer(
                session, rt, user_id=user_id, prompt_id=prompt_id, bullets=bullets, source="modal"
            )
    except DomainError as err:
        ack(response_action="errors", errors={"worked": str(err)})
        return
    ack()
    flows.after_answer(rt, user_id=user_id, prompt_id=prompt_id, post_id=post_id)


def submit_note(ack: Ack, body: dict, view: dict, context: dict) -> None:
    """Marketing's "what we will change" note."""
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
    ack()
    post_id = int(json.loads(view["private_metadata"])["post_id"])
    try:
        flows.acknowledge(rt, user_id=user_id, post_id=post_id, note=note)
    except DomainError as err:
        rt.tell(user_id, str(err))


def register(app: App) -> None:
    app.view(fb_blocks.SUBMIT_CALLBACK)(submit_feedback)
    app.view(fb_blocks.NOTE_CALLBACK)(submit_note)
