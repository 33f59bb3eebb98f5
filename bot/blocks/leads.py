"""Block Kit for the lead hand-off loop: the owner's DM with its three ratings, the reject
modal, the managers' escalations, and the /lead modal marketing hands a lead over with.
User text (names, companies, what marketing knows, notes) is escaped here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from bot.blocks.elements import (
    actions,
    button,
    context,
    escape_fit,
    mention,
    plain,
    quoted_sections,
    section,
)
from bot.models import LeadStatus

Message = tuple[str, list[dict]]

ACCEPT_ACTION = "lead_accept"
NOT_READY_ACTION = "lead_not_ready"
REJECT_ACTION = "lead_reject"  # opens the reject modal
REJECT_CALLBACK = "lead_reject_submit"
HAND_OFF_CALLBACK = "lead_hand_off_submit"
RATING_ACTIONS = (ACCEPT_ACTION, NOT_READY_ACTION)

LABELS = {
    LeadStatus.NEW: "not rated yet",
    LeadStatus.ACCEPTED: "Accepted (sales-qualified)",
    LeadStatus.NOT_READY: "Not ready (back to marketing for nurture)",
    LeadStatus.REJECTED: "Rejected",
}
EMOJI = {
    LeadStatus.ACCEPTED: ":white_check_mark:",
    LeadStatus.NOT_READY: ":seedling:",
    LeadStatus.REJECTED: ":no_entry_sign:",
}


@dataclass(frozen=True)
class LeadView:
    """What a lead message shows of the lead (read from the database when it is sent)."""

    pk: int
    person: str
    company: str | None = None
    title: str | None = None
    email: str | None = None
    source: str | None = None
    campaign: str | None = None
    context: str | None = None
    handed_by: str | None = None
    definition_version: int | None = None
    definition_summary: str | None = None


@dataclass(frozen=True)
class RatingView:
    rating: str
    reason: str | None
    note: str | None
    rated_by: str
    rated_at: str  # local time text
    late: bool
    can_change_until: str | None  # local time text; None: no longer changeable


def who(lead: LeadView) -> str:
    """ "Ana Ruiz (VP Sales, Acme)": the person, their role and company, escaped."""
    extra = ", ".join(escape_fit(x, 120) for x in (lead.title, lead.company) if x)
    name = f"*{escape_fit(lead.person, 200)}*"
    return f"{name} ({extra})" if extra else name


def _facts(lead: LeadView) -> list[str]:
    facts = []
    if lead.source:
        facts.append(f"Source: {escape_fit(lead.source, 120)}")
    if lead.campaign:
        facts.append(f"Campaign: {escape_fit(lead.campaign, 120)}")
    if lead.email:
        facts.append(f"Email: {escape_fit(lead.email, 200)}")
    if lead.handed_by:
        facts.append(f"Handed over by {mention(lead.handed_by)}")
    return facts


def _definition(lead: LeadView) -> dict:
    if lead.definition_version is None:
        text = (
            ":book: No written definition of a qualified lead yet: an admin can write one "
            "with `/closeloop definition edit`."
        )
    else:
        summary = escape_fit(lead.definition_summary or "", 600)
        text = (
            f":book: Qualified lead, definition v{lead.definition_version}: {summary} "
            "(`/closeloop definition` shows it all)"
        )
    return context(text)


def _buttons(pk: int, *, current: str | None) -> dict:
    def mark(status: str, label: str) -> str:
        return f"{label} ✓" if current == status else label

    return actions(
        f"lead_rate_{pk}",
        button(
            mark(LeadStatus.ACCEPTED, "Accept"),
            ACCEPT_ACTION,
            str(pk),
            style="primary" if current is None else None,
        ),
        button(mark(LeadStatus.NOT_READY, "Not ready"), NOT_READY_ACTION, str(pk)),
        button(mark(LeadStatus.REJECTED, "Reject…"), REJECT_ACTION, str(pk)),
    )


def rating_buttons(pk: int) -> dict:
    """*Accept* / *Not ready* / *Reject…* for a lead not rated yet (the Home tab's too)."""
    return _buttons(pk, current=None)


def lead_dm(lead: LeadView, *, due: str, reminder: bool = False) -> Message:
    """The owner's DM: who, from where, what marketing knows, the definition in force, and
    the three ratings."""
    head = "Reminder: please rate" if reminder else "Marketing handed you a lead:"
    text = f"{head} {who(lead)}. Please rate it by {due}."
    blocks: list[dict] = [section(text)]
    facts = _facts(lead)
    if facts:
        blocks.append(context(" · ".join(facts)))
    if lead.context:
        blocks.extend(quoted_sections("*What marketing knows*", lead.context)[:4])
    blocks.append(_definition(lead))
    blocks.append(_buttons(lead.pk, current=None))
    name = escape_fit(lead.person, 200)
    return f"{'Reminder: please rate' if reminder else 'New lead:'} {name}", blocks


def rated_dm(lead: LeadView, rating: RatingView) -> Message:
    """The owner's DM once rated: what was decided, by whom, and (for 7 days) the buttons to
    change it."""
    label = LABELS[LeadStatus(rating.rating)]
    reason = f": {escape_fit(rating.reason, 120)}" if rating.reason else ""
    late = " (after the SLA)" if rating.late else ""
    text = (
        f"{EMOJI[LeadStatus(rating.rating)]} {who(lead)}: *{label}{reason}*, by "
        f"{mention(rating.rated_by)} on {rating.rated_at}{late}."
    )
    blocks: list[dict] = [section(text)]
    if rating.note:
        blocks.extend(quoted_sections("*Note*", rating.note)[:2])
    if rating.can_change_until:
        blocks.append(context(f"You can change the rating until {rating.can_change_until}."))
        blocks.append(_buttons(lead.pk, current=rating.rating))
    return f"{escape_fit(lead.person, 200)}: {label}", blocks


def escalation(lead: LeadView, *, owner: str, hours: int) -> Message:
    """The sales managers told a lead is past its SLA unrated. The owner is named, not
    mentioned (they had their DM and reminder)."""
    text = (
        f":rotating_light: Lead {who(lead)} has not been rated {hours} hours after marketing "
        f"handed it over. Owner: {owner}."
    )
    blocks = [section(text)]
    facts = _facts(lead)
    if facts:
        blocks.append(context(" · ".join(facts)))
    blocks.append(_buttons(lead.pk, current=None))
    return text, blocks


def owner_missing(lead: LeadView, *, owner: str) -> Message:
    text = (
        f":warning: Lead {who(lead)}: its owner ({owner}) could not be reached in Slack, so "
        "nobody was asked to rate it. A sales manager can rate it here."
    )
    return text, [section(text), _buttons(lead.pk, current=None)]


def reject_modal(*, lead_pk: int, person: str, reasons: Sequence[str]) -> dict:
    """*Reject…*: the reason, required, from the taxonomy, and an optional note."""
    return {
        "type": "modal",
        "callback_id": REJECT_CALLBACK,
        "private_metadata": json.dumps({"lead": lead_pk}),
        "title": plain("Reject lead"),
        "submit": plain("Reject"),
        "close": plain("Cancel"),
        "blocks": [
            section(f"Why is {escape_fit(person, 200)} not a qualified lead?"),
            {
                "type": "input",
                "block_id": "reason",
                "label": plain("Reason"),
                "element": {
                    "type": "static_select",
                    "action_id": "reason",
                    "placeholder": plain("Choose one"),
                    "options": [{"text": plain(r[:75]), "value": r[:150]} for r in reasons[:100]],
                },
            },
            {
                "type": "input",
                "block_id": "note",
                "optional": True,
                "label": plain("Note for marketing"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "note",
                    "multiline": True,
                    "max_length": 1000,
                },
            },
        ],
    }


HAND_OFF_FIELDS = (
    # block id, label, optional, multiline, max length
    ("person", "Person", False, False, 255),
    ("title", "Their role", True, False, 255),
    ("company", "Company", False, False, 255),
    ("email", "Email", True, False, 255),
    ("source", "Source (webinar, paid search, ...)", False, False, 255),
    ("campaign", "Campaign", True, False, 255),
    ("context", "What marketing knows", True, True, 3000),
)


def hand_off_modal(*, definition_version: int | None) -> dict:
    """/lead: marketing hands a lead to a sales owner."""
    blocks: list[dict] = []
    if definition_version is not None:
        blocks.append(
            context(
                f"Hand over leads that meet the definition (v{definition_version}): "
                "`/closeloop definition` shows it."
            )
        )
    for block_id, label, optional, multiline, limit in HAND_OFF_FIELDS:
        blocks.append(
            {
                "type": "input",
                "block_id": block_id,
                "optional": optional,
                "label": plain(label),
                "element": {
                    "type": "plain_text_input",
                    "action_id": block_id,
                    "multiline": multiline,
                    "max_length": limit,
                },
            }
        )
        if block_id == "company":
            blocks.append(
                {
                    "type": "input",
                    "block_id": "owner",
                    "label": plain("Sales owner"),
                    "element": {
                        "type": "users_select",
                        "action_id": "owner",
                        "placeholder": plain("Who follows up"),
                    },
                }
            )
    return {
        "type": "modal",
        "callback_id": HAND_OFF_CALLBACK,
        "title": plain("Hand over a lead"),
        "submit": plain("Hand over"),
        "close": plain("Cancel"),
        "blocks": blocks,
    }


def handed_off(*, person: str, owner: str, due: str) -> str:
    return (
        f":outbox_tray: {escape_fit(person, 200)} handed to {mention(owner)}; they are asked to "
        f"rate it by {due}."
    )


def waiting_list(rows: Sequence[tuple[int, str, str, bool]]) -> Message:
    """``(lead pk, who, due text, overdue)``: the caller's leads waiting for a rating."""
    if not rows:
        text = "No lead is waiting for your rating."
        return text, [section(text)]
    blocks: list[dict] = [section(f"*{len(rows)} lead(s) waiting for your rating*")]
    for pk, person, due, overdue in rows[:45]:
        when = f":rotating_light: overdue since {due}" if overdue else f"due {due}"
        blocks.append(section(f"{person} — {when}"))
        blocks.append(_buttons(pk, current=None))
    return f"{len(rows)} lead(s) waiting for your rating", blocks[:50]
