"""The Monday lead report as Block Kit (for marketing's channel) and as plain text (for the
terminal). It names reps without mentioning them: the report pings nobody."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from bot.blocks.digest import ratio
from bot.blocks.elements import FORMER_COLLEAGUE, context, escape_fit, section
from bot.models import is_forgotten

MAX_BLOCKS = 50
SECTION_LIMIT = 3000
SHOWN_PER_PART = 25  # sources, campaigns or reps listed one by one; the rest are counted
NO_SOURCE = "No source"
NO_CAMPAIGN = "No campaign"
NO_OWNER = "No owner"
FLAG = ":warning:"


def _day(text: str) -> str:
    day = date.fromisoformat(text)
    return f"{day:%a} {day.day} {day:%b}"


def week_label(figures: dict) -> str:
    """``week of Mon 30 Nov 2026 (2026-W49)``."""
    monday = date.fromisoformat(figures["week_start"])
    return f"week of {monday:%a} {monday.day} {monday:%b %Y} ({figures['week']})"


def _hours(value: float | None) -> str:
    return "—" if value is None else f"{value:g} h"


def _reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{escape_fit(why, 80)} {n}" for why, n in reasons.items())


def _more(shown: list, total: int) -> list[str]:
    return [f"… and {total - len(shown)} more"] if total > len(shown) else []


Bold = Callable[[object], str]


def _parts(
    figures: dict, *, person: Callable[[str | None], str], bold: Bold, flag: str = FLAG
) -> list:
    """(title, lines) pairs; ``person`` names a rep (never a Slack mention), ``bold`` our own
    emphasis and ``flag`` our warning sign (the terminal has neither)."""
    f, b, n = figures, bold, figures["min_sample"]
    alert = f"{f['rejection_alert']:.0%}"
    parts: list[tuple[str, list[str]]] = []

    overview = [
        f"Handed over {b(f['handed_over'])} · accepted {b(f['accepted'])} · "
        f"not ready {b(f['not_ready'])} · rejected {b(f['rejected'])} · "
        f"no response {b(f['no_response'])}"
    ]
    if f["rejected_by_reason"]:
        overview.append(f"Rejected by reason: {_reasons(f['rejected_by_reason'])}")
    flagged = [g for g in f["by_source"] if g["flagged"]]
    for g in flagged:
        overview.append(
            f"{flag} {b(escape_fit(g['name'] or NO_SOURCE, 80))}: "
            f"{ratio(g['rejected'], g['rated'], n)} of its rated leads rejected, above "
            f"{alert}: its scoring needs adjusting."
        )
    parts.append(("The week's leads", overview))

    sources = []
    for g in f["by_source"][:SHOWN_PER_PART]:
        line = (
            f"{flag + ' ' if g['flagged'] else ''}{b(escape_fit(g['name'] or NO_SOURCE, 80))}: "
            f"{g['handed_over']} handed over · accepted {g['accepted']} · "
            f"not ready {g['not_ready']} · rejected {g['rejected']}"
            + (f" ({_reasons(g['rejected_by_reason'])})" if g["rejected_by_reason"] else "")
            + f" · no response {g['no_response']}"
            + f" — rejection rate {ratio(g['rejected'], g['rated'], n)}"
        )
        sources.append(line)
    sources += _more(f["by_source"][:SHOWN_PER_PART], len(f["by_source"]))
    parts.append(("By source", sources))

    campaigns = [
        f"{b(escape_fit(g['name'] or NO_CAMPAIGN, 80))}: {g['handed_over']} handed over · "
        f"accepted {g['accepted']} · not ready {g['not_ready']} · rejected {g['rejected']}"
        + (f" ({_reasons(g['rejected_by_reason'])})" if g["rejected_by_reason"] else "")
        + f" · no response {g['no_response']}"
        for g in f["by_campaign"][:SHOWN_PER_PART]
    ]
    campaigns += _more(f["by_campaign"][:SHOWN_PER_PART], len(f["by_campaign"]))
    parts.append(("By campaign", campaigns))

    sla = f["sla"]
    sla_lines = [
        f"Rated within the SLA: {b(ratio(sla['on_time'], sla['due'], n))}"
        f" · median time to first response {b(_hours(sla['median_hours_to_first_response']))}"
    ]
    for title, groups, name in (
        ("By source", sla["by_source"], lambda g: escape_fit(g["name"] or NO_SOURCE, 80)),
        ("By rep", sla["by_rep"], lambda g: person(g["name"])),
    ):
        sla_lines.append(b(title))
        for g in groups[:SHOWN_PER_PART]:
            sla_lines.append(
                f"{name(g)}: within SLA {ratio(g['on_time'], g['due'], n)}"
                + (f" (late {g['late']}, missed {g['missed']})" if g["late"] or g["missed"] else "")
                + f" · median {_hours(g['median_hours_to_first_response'])}"
                + (f" · {g['sla_running']} still within their SLA" if g["sla_running"] else "")
            )
        sla_lines += _more(groups[:SHOWN_PER_PART], len(groups))
    parts.append(("SLA and time to first response", sla_lines))
    return parts


def _definition(figures: dict) -> str:
    found = figures["definition"]
    if found is None:
        return "Lead definition in force: none written yet"
    return f"Lead definition in force: version {found['version']}"


def _name(figures: dict, user_id: str | None) -> str:
    """A rep named without a ping: their Slack name as stored, else their ID as text."""
    if not user_id:
        return NO_OWNER
    if is_forgotten(user_id):
        return FORMER_COLLEAGUE
    return figures["names"].get(user_id) or user_id


def _chunks(title: str, lines: list[str], limit: int = SECTION_LIMIT) -> list[str]:
    """``title`` and ``lines`` in as many texts of at most ``limit`` characters as needed
    (a line is never split, only cut when it alone is too long)."""
    texts: list[str] = []
    current = title
    for line in lines:
        line = line if len(line) <= limit - 10 else line[: limit - 11] + "…"
        if len(current) + 1 + len(line) > limit:
            texts.append(current)
            current = line
        else:
            current = f"{current}\n{line}"
    texts.append(current)
    return texts


def report_message(figures: dict) -> tuple[str, list[dict]]:
    """The Monday report for Slack: a header, one section (or a few) per part, the
    definition in force as context. Nobody is mentioned, so nobody is pinged."""
    title = f"Lead hand-off report — {week_label(figures)}"
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": title}}]
    footer = context(
        f"{_definition(figures)} · leads handed over {_day(figures['week_start'])} – "
        f"{_day(figures['week_end'])}, {figures['timezone']}"
    )
    if not figures["has_data"]:
        text = f"No leads were handed over in the {week_label(figures)}."
        return text, [*blocks, section(text), footer]

    def person(user: str | None) -> str:
        return escape_fit(_name(figures, user), 80)

    for heading, lines in _parts(figures, person=person, bold=lambda t: f"*{t}*"):
        for chunk in _chunks(f"*{heading}*", lines):
            if len(blocks) >= MAX_BLOCKS - 2:
                break
            blocks.append(section(chunk))
    if len(blocks) >= MAX_BLOCKS - 2:
        blocks.append(context("The report is cut short here; `closeloop leads report` has it all."))
    blocks.append(footer)
    named = figures["flagged_sources"]
    flagged = ", ".join(escape_fit(s or NO_SOURCE, 80) for s in named[:3])
    if len(named) > 3:
        flagged += f" and {len(named) - 3} more"
    text = (
        f"{title}: {figures['handed_over']} handed over, {figures['accepted']} accepted, "
        f"{figures['not_ready']} not ready, {figures['rejected']} rejected, "
        f"{figures['no_response']} no response"
        + (f"; rejection rate above {figures['rejection_alert']:.0%}: {flagged}" if flagged else "")
    )
    return text, blocks


def report_text(figures: dict) -> str:
    """The Monday report for a terminal."""
    title = f"Lead hand-off report — {week_label(figures)} ({figures['timezone']})"
    lines = [title, "=" * len(title)]
    if not figures["has_data"]:
        lines.append(f"No leads were handed over in the {week_label(figures)}.")
    else:
        for heading, body in _parts(
            figures, person=lambda u: _name(figures, u), bold=str, flag="(!)"
        ):
            lines.extend(["", heading, "-" * len(heading)])
            # undo only our mrkdwn escaping; user text is otherwise printed as typed
            lines.extend(
                line.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
                for line in body
            )
    lines.extend(["", _definition(figures)])
    return "\n".join(lines) + "\n"
