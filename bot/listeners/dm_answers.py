"""A rep typed in the bot's DM: their three bullets (or a question we answer with help)."""

from __future__ import annotations

from slack_bolt import App
from sqlalchemy.orm import Session

from bot.blocks import feedback as fb_blocks
from bot.db import in_transaction
from bot.event_inbox import EVENT
from bot.home_tab import changed as homes_changed
from bot.models import PromptStatus
from bot.runtime import Runtime
from bot.services import feedback as feedback_svc
from bot.services import outgoing
from bot.services.errors import DomainError
from bot.services.feedback import Bullets


def dm_message(event: dict, context: dict) -> None:
    """Runs after the event's 200 (bot.event_inbox). The answer and the reply to it are
    stored together, the reply keyed by the event, so a replayed event replies once."""
    if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
        return
    rt: Runtime = context["rt"]
    user_id, text = event["user"], event.get("text") or ""
    key = f"event:{context.get(EVENT) or event.get('client_msg_id') or event.get('ts')}"

    def reply(session: Session, content: tuple[str, list[dict] | None]) -> None:
        outgoing.notice(
            session, user_id=user_id, text=content[0], blocks=content[1], now=rt.now(), key=key
        )

    def answer(session: Session) -> bool:
        prompt = feedback_svc.open_prompt_for(session, user_id=user_id, now=rt.now())
        if prompt is None:
            reply(session, (fb_blocks.no_open_prompt()[0], None))
            return False
        answered = prompt.status == PromptStatus.ANSWERED
        bullets = feedback_svc.parse_three_bullets(
            feedback_svc.unescape_slack(text), require_markers=answered
        )
        if bullets is None:
            help_text = fb_blocks.already_answered_help() if answered else fb_blocks.parse_help()
            reply(session, help_text)
            return False
        return store(session, prompt.id, bullets)

    def store(session: Session, prompt_id: int, bullets: Bullets) -> bool:
        try:
            with session.begin_nested():
                stored = feedback_svc.record_answer(
                    session,
                    prompt_id=prompt_id,
                    user_id=user_id,
                    bullets=bullets,
                    source="dm",
                    feedback_channel=rt.settings.feedback_channel,
                    now=rt.now(),
                )
        except DomainError as err:
            reply(session, (str(err), None))
            return False
        confirmation = fb_blocks.answer_confirmation(
            worked=bullets.worked,
            fell_flat=bullets.fell_flat,
            insight=bullets.insight,
            edited=stored.edited,
        )
        reply(session, confirmation)
        return True

    stored = in_transaction(rt.session_factory, answer)
    rt.send_soon()
    if stored:
        homes_changed(rt, user_id, marketing=True)


def register(app: App) -> None:
    app.event("message")(dm_message)
