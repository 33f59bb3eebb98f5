"""The Friday answer form: opened from the prompt's buttons or ``/closeloop``, submitted here.

Submitting stores the answer before the ack (an inline error keeps the modal open when it
cannot be stored); marketing's post and the DM's "answered" are queued with it."""

from __future__ import annotations

import json

from slack_bolt import Ack, App

from bot.blocks import feedback as fb_blocks
from bot.db import in_transaction
from bot.home_tab import changed as homes_changed
from bot.listeners.forms import keeps_form_when_database_is_away, value
from bot.models import Prompt
from bot.runtime import Runtime
from bot.services import feedback as feedback_svc
from bot.services.errors import DomainError
from bot.services.feedback import Bullets


def modal_for(prompt: Prompt, user_id: str) -> dict:
    """The answer modal for ``prompt``, prefilled with its answer when editing."""
    feedback_svc.check_can_answer(prompt, user_id)
    answer = prompt.answer
    existing = (
        {
            "worked": answer.worked,
            "fell_flat": answer.fell_flat,
            "insight": answer.insight,
            "campaign": answer.campaign,
        }
        if answer
        else None
    )
    return fb_blocks.feedback_modal(
        prompt_id=prompt.id, week_start=prompt.week_start, answer=existing
    )


@keeps_form_when_database_is_away("worked", "answer")
def submit_feedback(ack: Ack, body: dict, view: dict, context: dict) -> None:
    """Store (or edit) this week's answer, then tell Slack."""
    rt: Runtime = context["rt"]
    user_id = body["user"]["id"]
    prompt_id = int(json.loads(view["private_metadata"])["prompt_id"])
    bullets = Bullets(
        worked=value(view, "worked"),
        fell_flat=value(view, "fell_flat"),
        insight=value(view, "insight"),
        campaign=value(view, "campaign") or None,
    )
    errors = feedback_svc.validate_bullets(bullets)
    if errors:
        ack(response_action="errors", errors=errors)
        return
    try:
        in_transaction(
            rt.session_factory,
            lambda session: feedback_svc.record_answer(
                session,
                prompt_id=prompt_id,
                user_id=user_id,
                bullets=bullets,
                source="modal",
                feedback_channel=rt.settings.feedback_channel,
                now=rt.now(),
            ),
        )
    except DomainError as err:
        ack(response_action="errors", errors={"worked": str(err)})
        return
    ack()
    rt.send_soon()
    context["later"](homes_changed, rt, user_id, marketing=True)


def register(app: App) -> None:
    app.view(fb_blocks.SUBMIT_CALLBACK)(submit_feedback)
