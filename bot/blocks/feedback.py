"""Block Kit for the weekly loop: the prompt DM, its modal, marketing's post, the replies."""

from __future__ import annotations

import json
from datetime import date

from bot.blocks.elements import (
    actions,
    button,
    context,
    escape,
    escape_fit,
    mention,
    plain,
    quote,
    quoted_sections,
    section,
    truncate,
)
from bot.models import PromptStatus, is_forgotten

OPEN_ACTION = "feedback_open"
SKIP_NOTHING_ACTION = "feedback_skip_nothing"
SKIP_OUT_ACTION = "feedback_skip_out"
SUBMIT_CALLBACK = "feedback_submit"
CLOSE_LOOP_ACTION = "loop_close"
NOTE_CALLBACK = "loop_note_submit"

QUESTIONS = (
    ("worked", "What messaging worked this week, and why?"),
    ("fell_flat", "What fell flat, and which objection killed it?"),
    ("insight", "One market insight"),
)

Message = tuple[str, list[dict]]


def week_label(week_start: date) -> str:
    """``week of Nov 16``."""
    return f"week of {week_start:%b} {week_start.day}"


def prompt_message(*, prompt_id: int, week_start: date, reminder: bool = False) -> Message:
    """The Friday DM: the three-bullet template, an Answer button and the two skips."""
    lead = (
        "*Reminder:* your feedback for the " if reminder else "*Friday feedback for marketing* — "
    ) + week_label(week_start)
    text = (
        f"{lead}\n1. What messaging worked this week, and why?\n"
        "2. What fell flat, and which objection killed it?\n3. One market insight."
    )
    blocks = [
        section(lead + (" is still open. It takes two minutes." if reminder else "")),
        section(
            "*1.* What messaging worked this week, and why?\n"
            "*2.* What fell flat, and which objection killed it?\n"
            "*3.* One market insight."
        ),
        actions(
            "feedback_prompt",
            button("Answer", OPEN_ACTION, str(prompt_id), style="primary"),
            button("Nothing this week", SKIP_NOTHING_ACTION, str(prompt_id)),
            button("Out this week", SKIP_OUT_ACTION, str(prompt_id)),
        ),
        context(
            "Or reply here with three bullet lines (- worked … / - fell flat … / - insight …)."
        ),
    ]
    return text, blocks


def prompt_done_message(
    *, prompt_id: int, week_start: date, status: str, skip_reason: str | None = None
) -> Message:
    """The DM after the rep answered, skipped, or the week closed unanswered."""
    week = week_label(week_start)
    if status == PromptStatus.ANSWERED:
        text = (
            f":white_check_mark: Answered — thanks! Your feedback for the {week} is with marketing."
        )
        buttons = [button("Edit answer", OPEN_ACTION, str(prompt_id))]
    elif status == PromptStatus.SKIPPED:
        label = {"nothing": "Nothing this week", "out": "Out this week"}.get(skip_reason or "", "")
        text = f":zzz: Skipped ({label}) for the {week}."
        buttons = [button("Answer anyway", OPEN_ACTION, str(prompt_id))]
    else:
        text = f":hourglass: The {week} closed without an answer and is recorded as missed."
        buttons = []
    blocks: list[dict] = [section(text)]
    if buttons:
        blocks.append(actions("feedback_prompt", *buttons))
    return text, blocks


def feedback_modal(
    *, prompt_id: int, week_start: date, answer: dict[str, str | None] | None = None
) -> dict:
    """The answer modal: three required fields (3000 chars each) and an optional campaign."""
    answer = answer or {}
    blocks: list[dict] = []
    for name, label in QUESTIONS:
        element = {
            "type": "plain_text_input",
            "action_id": name,
            "multiline": True,
            "max_length": 3000,
        }
        if answer.get(name):
            element["initial_value"] = answer[name]
        blocks.append(
            {"type": "input", "block_id": name, "label": plain(label), "element": element}
        )
    campaign = {"type": "plain_text_input", "action_id": "campaign", "max_length": 255}
    if answer.get("campaign"):
        campaign["initial_value"] = answer["campaign"]
    blocks.append(
        {
            "type": "input",
            "block_id": "campaign",
            "optional": True,
            "label": plain("Campaign or source"),
            "hint": plain("Which campaign, asset or lead source this is about, if any."),
            "element": campaign,
        }
    )
    return {
        "type": "modal",
        "callback_id": SUBMIT_CALLBACK,
        "private_metadata": json.dumps({"prompt_id": prompt_id}),
        "title": plain("Weekly feedback"),
        "submit": plain("Send to marketing"),
        "close": plain("Cancel"),
        "blocks": [context(f"Your three bullets for the {week_label(week_start)}."), *blocks],
    }


def answer_confirmation(*, worked: str, fell_flat: str, insight: str, edited: bool) -> Message:
    """The DM reply after a typed answer was parsed and stored."""
    head = "Updated your answer" if edited else "Got it — sent to marketing"
    text = f"{head}:\n1. {worked}\n2. {fell_flat}\n3. {insight}"
    blocks = [
        section(f":white_check_mark: *{head}:*"),
        *quoted_sections("*Worked:*", worked),
        *quoted_sections("*Fell flat:*", fell_flat),
        *quoted_sections("*Market insight:*", insight),
    ]
    return truncate(escape(text), 3000), blocks


def parse_help() -> Message:
    text = (
        "I couldn't read three bullets there. Reply with exactly three lines, for example:\n"
        "- Worked: the ROI calculator opener, because CFOs could check it live\n"
        '- Fell flat: the security deck; "we already have SSO" killed it\n'
        "- Insight: two prospects mentioned budgets moving to Q3\n"
        "Or press *Answer* on the prompt to use the form."
    )
    return text, [section(text)]


def no_open_prompt() -> Message:
    text = "There is no open feedback prompt for you right now; your next one arrives on schedule."
    return text, [section(text)]


def already_answered_help() -> Message:
    text = (
        "Thanks! Your answer for this week is in. To change it, press *Edit answer* on the "
        "prompt, or reply with three bullet lines (- worked … / - fell flat … / - insight …)."
    )
    return text, [section(text)]


def feedback_post(
    *,
    post_id: int,
    rep_id: str,
    week_start: date,
    worked: str,
    fell_flat: str,
    insight: str,
    campaign: str | None,
    edited: bool,
    acknowledged_by: list[str],
) -> Message:
    """Marketing's channel post: the rep's three bullets and a Close the loop button.

    The answer of someone ``closeloop forget-user`` forgot has no text left: the post says
    so, names nobody, and offers no button (there is no one to close the loop with).
    """
    rep = mention(rep_id)
    head = f"*Weekly feedback from {rep}* — {week_label(week_start)}"
    if not (worked or fell_flat or insight):
        text = f"{head}\n_Removed: its author's data was deleted._"
        return text, [section(text), *(_acknowledged(acknowledged_by) if acknowledged_by else [])]
    if edited:
        head += " _(edited)_"
    blocks = [
        section(head),
        *quoted_sections("*:white_check_mark: What worked*", worked),
        *quoted_sections("*:x: What fell flat*", fell_flat),
        *quoted_sections("*:bulb: Market insight*", insight),
    ]
    if campaign:
        blocks.append(context("Campaign / source: " + escape_fit(campaign, 300)))
    blocks.extend(_acknowledged(acknowledged_by))
    if not is_forgotten(rep_id):
        blocks.append(
            actions(
                "loop", button("Close the loop", CLOSE_LOOP_ACTION, str(post_id), style="primary")
            )
        )
    text = truncate(
        f"Weekly feedback from {rep}: worked: {escape(worked)} | fell flat: "
        f"{escape(fell_flat)} | insight: {escape(insight)}",
        3000,
    )
    return text, blocks


def _acknowledged(acknowledged_by: list[str]) -> list[dict]:
    if acknowledged_by:
        who = ", ".join(dict.fromkeys(mention(u) for u in acknowledged_by))
        return [context(f":white_check_mark: Loop closed by {who}")]
    return [context(":hourglass: Waiting for marketing to close the loop")]


def close_loop_modal(*, post_id: int, rep_id: str) -> dict:
    """Marketing writes what it will change."""
    return {
        "type": "modal",
        "callback_id": NOTE_CALLBACK,
        "private_metadata": json.dumps({"post_id": post_id}),
        "title": plain("Close the loop"),
        "submit": plain("Send"),
        "close": plain("Cancel"),
        "blocks": [
            section(f"Tell {mention(rep_id)} what marketing will do about this."),
            {
                "type": "input",
                "block_id": "note",
                "label": plain("What will marketing change?"),
                "hint": plain(
                    "For example: pausing that campaign, shifting budget to the webinar format."
                ),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "note",
                    "multiline": True,
                    "max_length": 3000,
                },
            },
        ],
    }


def ack_thread_reply(*, marketer_id: str, note: str | None, emoji: str | None) -> Message:
    """The reply in the post's thread saying marketing closed the loop."""
    if note:
        text = f":white_check_mark: {mention(marketer_id)} closed the loop:\n{quote(note)}"
    else:
        text = f":{emoji or 'white_check_mark'}: {mention(marketer_id)} closed the loop on this."
    return text, [section(text)]


def ack_rep_dm(*, marketer_id: str, note: str | None, channel: str, subject: str) -> Message:
    """The DM telling the rep what marketing said about ``subject`` (our own, escaped text)."""
    if note:
        text = (
            f"{mention(marketer_id)} from marketing read {subject} in <#{channel}> and will "
            f"change this:\n{quote(note)}"
        )
    else:
        text = (
            f"{mention(marketer_id)} from marketing read and acknowledged {subject} in "
            f"<#{channel}>."
        )
    return text, [section(text)]
