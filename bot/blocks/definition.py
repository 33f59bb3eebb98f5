"""Block Kit for the definition of a qualified lead: the view, its history, the edit modal,
the channels' notice of a new version, the owners' review DM, the admins' Home warning."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from bot.blocks.digest import pct
from bot.blocks.elements import (
    actions,
    button,
    context,
    escape,
    escape_fit,
    mention,
    plain,
    section,
)
from bot.services.definition import GUIDANCE, MAX_NOTE, MAX_TEXT, SECTIONS

SUBMIT_CALLBACK = "definition_submit"
STILL_RIGHT_ACTION = "definition_still_right"
EDIT_ACTION = "definition_edit"
SUMMARY_BLOCK = "summary"
NOTE_BLOCK = "note"
SHOW_COMMAND = "/closeloop definition"

Message = tuple[str, list[dict]]

HELP = (
    "*The definition of a qualified lead*\n"
    "• `/closeloop definition` shows the version in force\n"
    "• `/closeloop definition history` lists the versions\n"
    "• `/closeloop definition edit` opens the editor (Closeloop admins)\n"
    "The operator can also load it from a Markdown file: "
    '`closeloop definition set definition.md --note "what changed"`.'
)
NOTHING_YET = (
    "*No definition of a qualified lead has been written yet.*\n"
    "An admin writes it with `/closeloop definition edit`, or the operator loads a Markdown "
    "file with `closeloop definition set definition.md` (`closeloop definition show` prints "
    "a template with every section)."
)


def day(instant: datetime) -> str:
    return f"{instant:%b} {instant.day}, {instant:%Y}"


def _by(author: str | None) -> str:
    return mention(author) if author else "the operator (closeloop command)"


def text_sections(title: str, text: str | None, *, empty: str = "_Not written yet._") -> list[dict]:
    """``title`` and the escaped ``text`` in as many sections as it needs (3,000 each)."""
    body = escape(text or "").strip() or empty
    chunks, current = [], title
    for line in body.split("\n"):
        while len(line) > 2900:  # one very long line: cut it where it is
            chunks.append(f"{current}\n{line[:2900]}" if current else line[:2900])
            current, line = "", line[2900:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > 2990:
            chunks.append(current)
            candidate = line
        current = candidate
    if current:
        chunks.append(current)
    return [section(chunk) for chunk in chunks]


def definition_message(
    *,
    version: int | None,
    summary: str = "",
    sections: Mapping[str, str] | None = None,
    note: str | None = None,
    author: str | None = None,
    created_at: datetime | None = None,
    latest: int | None = None,
) -> Message:
    """The definition as ``/closeloop definition`` shows it (to the person who asked)."""
    if version is None:
        return "No definition of a qualified lead has been written yet.", [section(NOTHING_YET)]
    when = day(created_at) if created_at else ""
    older = ""
    if latest and latest != version:
        older = f" · :warning: an older version: {latest} is in force"
    blocks: list[dict] = [
        {"type": "header", "text": plain(f"Qualified lead: version {version}")},
        context(
            f"Saved by {_by(author)} on {when} · what changed: "
            f"{escape_fit(note, 500) or 'not said'}{older}"
        ),
        *text_sections("", summary, empty="_No summary._"),
    ]
    for key, title in SECTIONS:
        blocks.extend(text_sections(f"*{title}*", (sections or {}).get(key)))
    blocks.append(context(f"`{SHOW_COMMAND} history` lists every version."))
    text = f"Qualified lead, version {version}: {escape_fit(summary, 300)}"
    return text, blocks[:50]


def history_message(rows: Sequence[Mapping]) -> Message:
    """The versions, newest first (each: version, author, created_at, note)."""
    if not rows:
        return "No definition of a qualified lead has been written yet.", [section(NOTHING_YET)]
    lines = [
        f"• *Version {r['version']}* · {day(r['created_at'])} · {_by(r['author'])}: "
        f"{escape_fit(r['note'], 200) or '_no note_'}"
        for r in rows
    ]
    blocks = [section("*The definition of a qualified lead, newest first*")]
    chunk: list[str] = []
    for line in lines:
        if sum(len(x) + 1 for x in chunk) + len(line) > 2900:
            blocks.append(section("\n".join(chunk)))
            chunk = []
        chunk.append(line)
    blocks.append(section("\n".join(chunk)))
    blocks.append(context(f"`{SHOW_COMMAND}` shows the version in force."))
    return f"{len(rows)} version(s) of the definition of a qualified lead", blocks


def edit_modal(
    *,
    version: int | None,
    summary: str = "",
    sections: Mapping[str, str] | None = None,
) -> dict:
    """The editor: the summary, one input per section, and what changed (required)."""

    def text_input(block_id: str, label: str, initial: str, *, hint: str, optional: bool):
        element: dict = {
            "type": "plain_text_input",
            "action_id": block_id,
            "multiline": True,
            "max_length": MAX_TEXT,
        }
        if initial:
            element["initial_value"] = initial[:MAX_TEXT]
        return {
            "type": "input",
            "block_id": block_id,
            "label": plain(label),
            "element": element,
            "optional": optional,
            "hint": plain(hint),
        }

    intro = (
        f"You are editing version {version}. Saving makes version {version + 1}; "
        "both teams are told, with your note."
        if version is not None
        else "The first version of the definition. Both teams are told when it is saved."
    )
    blocks: list[dict] = [
        context(intro + " Markdown is kept as you type it."),
        text_input(
            SUMMARY_BLOCK,
            "Summary: what a qualified lead is",
            summary,
            hint="One paragraph both teams agree on.",
            optional=False,
        ),
    ]
    for key, title in SECTIONS:
        blocks.append(
            text_input(
                key, title, (sections or {}).get(key) or "", hint=GUIDANCE[key], optional=True
            )
        )
    note = {
        "type": "plain_text_input",
        "action_id": NOTE_BLOCK,
        "max_length": MAX_NOTE,
        "placeholder": plain("e.g. Raised the minimum company size to 50 employees"),
    }
    blocks.append(
        {
            "type": "input",
            "block_id": NOTE_BLOCK,
            "label": plain("What changed"),
            "element": note,
            "hint": plain("Sent with the new version to the sales and marketing channels."),
        }
    )
    return {
        "type": "modal",
        "callback_id": SUBMIT_CALLBACK,
        "private_metadata": json.dumps({"base": version}),
        "title": plain("Qualified lead"),
        "submit": plain("Save new version"),
        "close": plain("Cancel"),
        "blocks": blocks,
    }


def changed_notice(
    *, version: int, summary: str, note: str | None, author: str | None, created_at: datetime
) -> Message:
    """A channel told of a new version (sales's and marketing's)."""
    what = escape_fit(note, 1000) or "not said"
    headline = (
        f":memo: *The definition of a qualified lead is now version {version}*, "
        f"saved by {_by(author)} on {day(created_at)}."
    )
    blocks = [
        section(f"{headline}\n*What changed:* {what}"),
        section(f"*In short:* {escape_fit(summary, 1500)}"),
        context(
            f"Type `{SHOW_COMMAND}` to read it all; ratings from now on are made under version "
            f"{version}."
        ),
    ]
    return f"The definition of a qualified lead is now version {version}: {what}", blocks


def review_dm(
    *,
    period: str,
    version: int | None,
    figures: Mapping,
    reviewed_by: str | None = None,
    reviewed_at: datetime | None = None,
    outcome: str | None = None,
) -> Message:
    """An owner asked to review the definition for ``period``, with its rejection figures,
    and *Still right* / *Edit*; once answered, what was recorded instead of the buttons."""
    what = f"version {version}" if version is not None else "no definition yet"
    lines = [
        f":mag: *Time to review the definition of a qualified lead* ({what}), after {period}.",
        f"In {period}: *{figures['handed']}* lead(s) handed to sales, *{figures['rated']}* "
        f"rated, *{figures['rejected']}* rejected "
        f"(rejection rate {pct(figures['rate'])}).",
    ]
    blocks = [section("\n".join(lines))]
    if figures["reasons"]:
        reasons = "\n".join(f"• {escape_fit(r, 80)}: {n}" for r, n in figures["reasons"][:10])
        blocks.append(section(f"*Rejected, by reason*\n{reasons}"))
    if figures["sources"]:
        rows = []
        for s in figures["sources"][:15]:
            few = f"under {figures['min_sample']} rated"
            rate = pct(s["rate"]) if s["rate"] is not None else few
            rows.append(
                f"• {escape_fit(s['source'], 80)}: {s['rejected']} of {s['rated']} rated "
                f"rejected ({rate}); {s['handed']} handed over"
            )
        blocks.append(section("*Rejection rate by source*\n" + "\n".join(rows)))
    if reviewed_at is not None:
        said = "still right" if outcome == "still_right" else "edited: a new version was saved"
        blocks.append(
            context(
                f":white_check_mark: Reviewed for {period}: {said}, by {_by(reviewed_by)} "
                f"on {day(reviewed_at)}."
            )
        )
    else:
        blocks.append(
            section(
                "Does the definition still describe the leads sales wants? "
                f"`{SHOW_COMMAND}` shows it."
            )
        )
        buttons = [button("Edit", EDIT_ACTION, period)]
        if version is not None:
            buttons.insert(0, button("Still right", STILL_RIGHT_ACTION, period, style="primary"))
        blocks.append(actions("definition_review", *buttons))
    text = f"Time to review the definition of a qualified lead, after {period}"
    return text, blocks


def home_warning(
    *, version: int | None, last_reviewed_at: datetime | None, overdue: bool, missing: bool
) -> list[dict]:
    """The admins' Home tab: a definition not reviewed for two periods, or none written
    while the lead loop is in use (``missing``)."""
    if version is None and missing:
        return [
            section(
                ":memo: *No definition of a qualified lead yet.* Write it with "
                "`/closeloop definition edit` so both teams rate leads against the same words."
            ),
            {"type": "divider"},
        ]
    if version is None or not overdue:
        return []
    since = day(last_reviewed_at) if last_reviewed_at else "never"
    return [
        section(
            f":warning: *The definition of a qualified lead (version {version}) has not been "
            f"reviewed for two review periods* (last reviewed or edited: {since}). "
            "Its owners confirm it with *Still right* in their review DM, or edit it with "
            "`/closeloop definition edit`."
        ),
        {"type": "divider"},
    ]
