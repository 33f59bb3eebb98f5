"""Block Kit for the win/loss log: the modal, the channel post, nudges and escalations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from bot.blocks.elements import (
    actions,
    button,
    context,
    escape,
    escape_fit,
    mention,
    plain,
    quoted_sections,
    section,
    truncate,
)
from bot.blocks.feedback import CLOSE_LOOP_ACTION
from bot.models import is_forgotten

OPEN_ACTION = "winloss_open"
OPEN_BLANK_ACTION = "winloss_open_blank"  # "Another deal": the blank form
EDIT_ACTION = "winloss_edit"
SUBMIT_CALLBACK = "winloss_submit"
NONE_VALUE = "__none__"

OUTCOMES = (("won", "Won"), ("lost", "Lost"), ("no_decision", "No decision"))
OUTCOME_EMOJI = {"won": ":trophy:", "lost": ":x:", "no_decision": ":zzz:"}

Message = tuple[str, list[dict]]


def _option(value: str, text: str) -> dict:
    return {"text": plain(truncate(text, 75)), "value": value[:150]}


def money(amount: Decimal | None) -> str:
    return "" if amount is None else f"{amount:,.2f}".removesuffix(".00")


@dataclass(frozen=True)
class Prefill:
    deal_name: str = ""
    outcome: str | None = None
    reason: str | None = None
    reason_category: str | None = None
    competitor: str | None = None  # a known competitor's name, or None
    insight: str | None = None
    closed_on: date | None = None
    amount: Decimal | None = None
    source: str | None = None
    crm_reason: str | None = None  # the CRM's own reason: shown, never put in the reason field


CRM_NOTE_BLOCK = "crm_note"


def crm_note(reason: str) -> dict:
    """The CRM's reason as a note beside the reason field: context for the rep, who still
    writes what the customer said."""
    block = context(
        f":memo: The CRM's note: _{escape_fit(reason, 2000)}_. Write below what the customer "
        "said, in their words."
    )
    block["block_id"] = CRM_NOTE_BLOCK
    return block


def winloss_modal(
    *,
    categories: Sequence[str],
    competitors: Sequence[str],
    today: date,
    prefill: Prefill | None = None,
    deal_pk: int | None = None,
    entry_id: int | None = None,
) -> dict:
    """The /winloss modal; ``deal_pk`` when opened for a known deal, ``entry_id`` to edit."""
    p = prefill or Prefill()

    def text_input(
        block_id,
        label,
        *,
        multiline=False,
        max_length=255,
        initial=None,
        optional=False,
        hint=None,
        placeholder=None,
    ):
        element = {
            "type": "plain_text_input",
            "action_id": block_id,
            "multiline": multiline,
            "max_length": max_length,
        }
        if initial:
            element["initial_value"] = initial
        if placeholder:
            element["placeholder"] = plain(placeholder)
        block = {
            "type": "input",
            "block_id": block_id,
            "label": plain(label),
            "element": element,
            "optional": optional,
        }
        if hint:
            block["hint"] = plain(hint)
        return block

    outcome_select: dict = {
        "type": "static_select",
        "action_id": "outcome",
        "options": [_option(v, t) for v, t in OUTCOMES],
    }
    if p.outcome:
        outcome_select["initial_option"] = _option(p.outcome, dict(OUTCOMES)[p.outcome])
    category_select: dict = {
        "type": "static_select",
        "action_id": "reason_category",
        "options": [_option(c, c) for c in categories[:100]],
    }
    if p.reason_category in categories:
        assert p.reason_category is not None  # one of the categories, so a str
        category_select["initial_option"] = _option(p.reason_category, p.reason_category)
    competitor_options = [_option(NONE_VALUE, "None")] + [
        _option(name, name) for name in competitors[:99]
    ]
    competitor_select = {
        "type": "static_select",
        "action_id": "competitor",
        "placeholder": plain("Pick a competitor"),
        "options": competitor_options,
    }
    if p.competitor and p.competitor in competitors[:99]:
        competitor_select["initial_option"] = _option(p.competitor, p.competitor)
    elif p.competitor is None and entry_id is not None:
        competitor_select["initial_option"] = competitor_options[0]
    amount = {
        "type": "number_input",
        "action_id": "amount",
        "is_decimal_allowed": True,
        "min_value": "0",
    }
    if p.amount is not None:
        amount["initial_value"] = str(p.amount)
    blocks = [
        text_input("deal_name", "Deal", initial=p.deal_name, placeholder="Acme Corp renewal"),
        {
            "type": "input",
            "block_id": "outcome",
            "label": plain("Outcome"),
            "element": outcome_select,
        },
        *([crm_note(p.crm_reason)] if p.crm_reason else []),
        text_input(
            "reason",
            "Primary reason, in the customer's own words",
            multiline=True,
            max_length=3000,
            initial=p.reason,
            hint="Quote the customer (\"We couldn't justify a second tool when Salesforce "
            'already does forecasting"), don\'t conclude ("poor fit").',
        ),
        {
            "type": "input",
            "block_id": "reason_category",
            "label": plain("Reason category"),
            "element": category_select,
        },
        {
            "type": "input",
            "block_id": "competitor",
            "label": plain("Competitor involved"),
            "optional": True,
            "element": competitor_select,
        },
        text_input(
            "competitor_new", "…or a competitor not in the list", optional=True, max_length=120
        ),
        text_input(
            "insight",
            "Key insight: what should marketing do differently?",
            multiline=True,
            max_length=3000,
            initial=p.insight,
        ),
        {
            "type": "input",
            "block_id": "closed_on",
            "label": plain("Close date"),
            "element": {
                "type": "datepicker",
                "action_id": "closed_on",
                "initial_date": (p.closed_on or today).isoformat(),
            },
        },
        {
            "type": "input",
            "block_id": "amount",
            "label": plain("Amount"),
            "optional": True,
            "element": amount,
        },
        text_input("source", "Lead source / campaign", optional=True, initial=p.source),
    ]
    return {
        "type": "modal",
        "callback_id": SUBMIT_CALLBACK,
        "private_metadata": json.dumps({"deal": deal_pk, "entry": entry_id}),
        "title": plain("Edit win/loss" if entry_id else "Log a win/loss"),
        "submit": plain("Save" if entry_id else "Log it"),
        "close": plain("Cancel"),
        "blocks": blocks,
    }


def lateness(*, on_time: bool, logged_at: datetime, deadline_at: datetime) -> str:
    if on_time:
        return "on time"
    hours = max(1, round((logged_at - deadline_at).total_seconds() / 3600))
    return f"late by {hours} h" if hours < 48 else f"late by {round(hours / 24)} days"


def entry_post(
    *,
    post_id: int,
    entry_id: int,
    deal_name: str,
    outcome: str,
    reason: str,
    reason_category: str | None,
    competitor: str | None,
    insight: str | None,
    amount: Decimal | None,
    source: str | None,
    owner_id: str | None,
    author_id: str | None,
    on_time: bool,
    logged_at: datetime,
    deadline_at: datetime,
    edited: bool,
    acknowledged_by: list[str],
) -> Message:
    """The win/loss channel post, with Close the loop and Edit (Edit only when the deal's
    owner was forgotten: the entry stays, but there is nobody to close the loop with)."""
    label = dict(OUTCOMES)[outcome]
    head = f"{OUTCOME_EMOJI[outcome]} *{label}: {escape_fit(deal_name, 200)}*"
    if amount is not None:
        head += f" · {money(amount)}"
    if edited:
        head += " _(edited)_"
    who = mention(author_id, nobody="an import")
    if author_id is None and is_forgotten(owner_id):
        who = mention(owner_id)
    timing = lateness(on_time=on_time, logged_at=logged_at, deadline_at=deadline_at)
    blocks = [
        section(head),
        *quoted_sections("*In the customer's words*", reason),
        section(
            f"*Category:* {escape(reason_category) or '—'}\n"
            f"*Competitor:* {escape(competitor) or 'none'}"
            + (f"\n*Source / campaign:* {escape_fit(source, 300)}" if source else "")
        ),
        *quoted_sections("*What marketing should do differently*", insight or "—"),
        context(
            f"Logged by {who}"
            + (
                f" for {mention(owner_id)}"
                if owner_id and owner_id != author_id and who != mention(owner_id)
                else ""
            )
            + f" · {timing}"
        ),
    ]
    if acknowledged_by:
        names = ", ".join(dict.fromkeys(mention(u) for u in acknowledged_by))
        blocks.append(context(f":white_check_mark: Loop closed by {names}"))
    elif not is_forgotten(owner_id):
        blocks.append(context(":hourglass: Waiting for marketing to close the loop"))
    loop = (
        []
        if is_forgotten(owner_id)
        else [button("Close the loop", CLOSE_LOOP_ACTION, str(post_id), style="primary")]
    )
    blocks.append(actions("winloss_post", *loop, button("Edit", EDIT_ACTION, str(entry_id))))
    text = truncate(f"{label}: {escape(deal_name)} — \u201c{escape(reason)}\u201d", 3000)
    return text, blocks


def local_time(instant: datetime, tz: ZoneInfo) -> str:
    """``Fri Nov 20, 17:00 (Europe/Berlin)``: a deadline in someone's own time zone."""
    local = instant.astimezone(tz)
    return f"{local:%a %b} {local.day}, {local:%H:%M} ({tz.key})"


def nudge_message(
    *, deal_pk: int, deal_name: str, outcome: str, deadline: str, reminder: bool = False
) -> Message:
    """The owner's DM asking for the entry."""
    label = dict(OUTCOMES)[outcome]
    lead = "Reminder: " if reminder else ""
    text = (
        f"{lead}*{escape_fit(deal_name, 200)}* closed ({label}). Please log why, in the "
        f"customer's own words, by {deadline}."
    )
    return text, [
        section(text),
        actions(
            "winloss_nudge", button("Log win/loss", OPEN_ACTION, str(deal_pk), style="primary")
        ),
    ]


def logged_nudge(*, deal_name: str) -> Message:
    text = f":white_check_mark: Logged *{escape_fit(deal_name, 200)}* — thank you."
    return text, [section(text)]


def overdue_escalation(
    *,
    deal_pk: int,
    deal_name: str,
    owner_id: str | None,
    owner_email: str | None,
    outcome: str,
    hours: int,
    owner_name: str | None = None,
) -> Message:
    """Managers told a deal's entry is overdue. The owner is named, never mentioned: a post
    in a channel that lists who did not respond pings nobody (the owner had their DMs)."""
    if owner_id and is_forgotten(owner_id):
        owner = mention(owner_id)  # "a former colleague", no ID
    else:
        owner = escape(owner_name or owner_email or owner_id or "unknown owner")
    text = (
        f":rotating_light: *{escape_fit(deal_name, 200)}* ({dict(OUTCOMES)[outcome]}) has no "
        f"win/loss entry {hours} hours after close. Owner: {owner}."
    )
    return text, [
        section(text),
        actions("winloss_overdue", button("Log it (owner or manager)", OPEN_ACTION, str(deal_pk))),
    ]


def owner_missing(
    *, deal_pk: int, deal_name: str, owner_email: str | None, owner_id: str | None
) -> Message:
    if owner_email or owner_id:
        who = escape(owner_email) if owner_email else f"user {escape(owner_id)}"
        why = f"its owner ({who}) could not be reached in Slack"
    else:  # the owner was forgotten (closeloop forget-user) before logging it
        why = "its owner has left"
    text = (
        f":warning: Closed deal *{escape_fit(deal_name, 200)}*: {why}, so nobody was asked for "
        "the win/loss entry. The deal is kept; a sales manager can log it here or from "
        "`/winloss list`."
    )
    return text, [
        section(text),
        actions("winloss_owner_missing", button("Log it", OPEN_ACTION, str(deal_pk))),
    ]


def waiting_list(deals: Sequence[tuple[int, str, str, bool]], *, another: bool = False) -> Message:
    """``(deal pk, name, deadline text, overdue)`` rows, each with a Log button; ``another``
    (a bare ``/winloss``): which deal is it, with a button for one not in the list."""
    if not deals:
        text = "Nothing waiting: every one of your closed deals has its win/loss entry."
        return text, [section(text)]
    heading = (
        f"*Which deal?* {len(deals)} of yours are waiting for a win/loss entry"
        if another
        else f"*{len(deals)} deal(s) waiting for a win/loss entry*"
    )
    blocks: list[dict] = [section(heading)]
    for pk, name, deadline, overdue in deals[:45]:
        due = f":rotating_light: overdue since {deadline}" if overdue else f"due {deadline}"
        blocks.append(
            section(
                f"*{escape_fit(name, 200)}* — {due}",
                accessory=button("Log it", OPEN_ACTION, str(pk)),
            )
        )
    if another:
        blocks.append(actions("winloss_another", button("Another deal", OPEN_BLANK_ACTION, "-")))
    return f"{len(deals)} deal(s) waiting for a win/loss entry", blocks


HELP = (
    "*/winloss* logs why a deal was won or lost, in the customer's own words, within 24 hours "
    "of close.\n"
    "• `/winloss` opens the form (first asking which deal, when the CRM's are waiting for you)\n"
    "• `/winloss list` shows your closed deals still waiting for an entry\n"
    "• `/winloss help` shows this\n"
    "Entries go to marketing, who close the loop. You can edit an entry for 7 days from its "
    "message."
)
