"""A rep typed in the bot's DM: their three bullets (or a question we answer with help)."""

from __future__ import annotations

from slack_bolt import App
from sqlalchemy.orm import Session

from bot.blocks import feedback as fb_blocks
from bot.db import in_transaction
from bot.event_inbox import EVENT
from bot.home_tab import changed as homes_changed
from bot.runtime import Runtime
from bot.services import feedback as feedback_svc
from bot.services import outgoing
from bot.services.feedback import DmAnswer


def dm_message(event: dict, context: dict) -> None:
    """Runs after the event's 200 (bot.event_inbox). The answer and the reply to it are
    stored together, the reply keyed by the event, so a replayed event replies once."""
    if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
        return
    rt: Runtime = context["rt"]
    user_id = event["user"]
    key = f"event:{context.get(EVENT) or event.get('client_msg_id') or event.get('ts')}"

    def answer(session: Session) -> bool:
        result = feedback_svc.answer_by_dm(
            session,
            user_id=user_id,
            text=event.get("text") or "",
            feedback_channel=rt.settings.feedback_channel,
            now=rt.now(),
        )
        text, blocks = reply_to(result)
        outgoing.notice(session, user_id=user_id, text=text, blocks=blocks, now=rt.now(), key=key)
        return result.outcome == "stored"

    stored = in_transaction(rt.session_factory, answer)
    rt.send_soon()
    if stored:
        homes_changed(rt, user_id, marketing=True)


def reply_to(result: DmAnswer) -> tuple[str, list[dict] | None]:
    """The DM answering what the rep typed."""
    if result.outcome == "stored":
        assert result.bullets is not None and result.stored is not None
        return fb_blocks.answer_confirmation(
            worked=result.bullets.worked,
            fell_flat=result.bullets.fell_flat,
            insight=result.bullets.insight,
            edited=result.stored.edited,
        )
    if result.outcome == "refused":
        return result.refusal or "", None
    if result.outcome == "already_answered":
        return fb_blocks.already_answered_help()
    if result.outcome == "help":
        return fb_blocks.parse_help()
    return fb_blocks.no_open_prompt()[0], None


def register(app: App) -> None:
    app.event("message")(dm_message)
