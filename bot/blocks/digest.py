"""The monthly digest as Block Kit (for Slack) and as plain text (for the terminal)."""

from __future__ import annotations

from datetime import date

from bot.blocks.elements import FORMER_COLLEAGUE, context, escape_fit, mention, section, truncate
from bot.models import is_forgotten

MAX_BLOCKS = 50


def month_name(month: str) -> str:
    year, number = (int(part) for part in month.split("-"))
    return date(year, number, 1).strftime("%B %Y")


def pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.0%}"


def change(delta: float | None, previous: str) -> str:
    if delta is None:
        return ""
    points = round(delta * 100)
    arrow = "▲" if points > 0 else "▼" if points < 0 else "="
    return f" ({arrow} {abs(points)} pts vs {month_name(previous)})"


def permalink(base: str, channel: str, ts: str) -> str:
    return f"{base.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"


def _quote(text: str, limit: int = 280) -> str:
    return "> “" + escape_fit(" ".join(text.split()), limit) + "”"


def _sections(
    figures: dict, *, link_base: str, mention, bold=lambda text: f"*{text}*"
) -> list[tuple[str, str]]:
    """(title, body) pairs; ``mention(user)`` renders a person (a Slack mention or a name),
    ``bold`` our own emphasis (the terminal has none; user text is never touched)."""
    b = bold
    f = figures
    prev = f["previous"]
    parts: list[tuple[str, str]] = []
    decided = f["wins"] + f["losses"]
    lines = [
        f"Wins {b(f['wins'])} · Losses {b(f['losses'])} · No decision {b(f['no_decisions'])}",
        f"Win rate {b(pct(f['win_rate']))}{change(f['win_rate_change'], prev['month'])}"
        + (" — from fewer than 5 deals" if f["small_sample"] else ""),
    ]
    if f["amount_won"] or f["amount_lost"]:
        lines.append(f"Amount won {f['amount_won'] or '0'} · lost {f['amount_lost'] or '0'}")
    if decided == 0 and f["no_decisions"] == 0:
        lines = ["No deals closed this month."]
    parts.append(("Wins and losses", "\n".join(lines)))

    if f["loss_reasons_by_category"]:
        body = []
        for category, n in f["loss_reasons_by_category"].items():
            body.append(f"{b(escape_fit(category, 80))} — {n}")
            body.extend(_quote(q["quote"]) for q in f["loss_quotes"].get(category, [])[:3])
        parts.append(("Why we lost, in the customers' words", "\n".join(body)))

    if f["competitors"]:
        body = [
            f"{escape_fit(name, 80)}: {s['deals']} deal(s), {s['wins']} won, {s['losses']} lost"
            for name, s in list(f["competitors"].items())[:10]
        ]
        if f["rising_competitors"]:
            body.append("Rising: " + ", ".join(escape_fit(n, 80) for n in f["rising_competitors"]))
        parts.append(("Competitors", "\n".join(body)))

    if f["best_insights"]:
        body = [
            ("✅ " if i["acknowledged"] else "• ")
            + escape_fit(i["insight"], 280)
            + (f" — {mention(i['by'])}" if i["by"] else "")
            for i in f["best_insights"]
        ]
        parts.append(("Best insights for marketing", "\n".join(body)))

    fb = f["feedback"]
    if fb["prompted"]:
        body = [
            "Response rate per week: "
            + ", ".join(f"{w['week_start'][5:]} {pct(w['response_rate'])}" for w in fb["weeks"]),
            f"{fb['reps_always_responded']} of {fb['reps_prompted']} reps answered every week.",
        ]
        if fb["reps_missing"]:
            body.append(
                "Missed weeks: "
                + ", ".join(
                    f"{mention(r['user_id'])} ({r['missed']})" for r in fb["reps_missing"][:10]
                )
                + (
                    f" and {len(fb['reps_missing']) - 10} more"
                    if len(fb["reps_missing"]) > 10
                    else ""
                )
            )
        if fb["worked"]:
            body.append(b("What worked") + "\n" + "\n".join(_quote(t) for t in fb["worked"]))
        if fb["fell_flat"]:
            body.append(b("What fell flat") + "\n" + "\n".join(_quote(t) for t in fb["fell_flat"]))
        if fb["objections"]:
            body.append(
                "Most-cited objections: "
                + ", ".join(f"“{escape_fit(phrase, 60)}” ({n})" for phrase, n in fb["objections"])
            )
        parts.append(("Weekly feedback", "\n".join(body)))

    if f["loop_posts"]:
        body = [
            f"Marketing acknowledged {b(pct(f['acknowledged_rate']))} of {f['loop_posts']} "
            "feedback and win/loss posts"
            + (
                f", in a median of {f['median_hours_to_ack']} h"
                if f["median_hours_to_ack"] is not None
                else ""
            )
            + "."
        ]
        if f["open_loops"]:
            links = [
                (
                    f"<{permalink(link_base, o['channel'], o['ts'])}|{o['kind']}>"
                    if link_base
                    else o["kind"]
                )
                + f" from {mention(o['author'])}"
                for o in f["open_loops"][:10]
            ]
            body.append(f"Still open after 7 days ({len(f['open_loops'])}): " + ", ".join(links))
        parts.append(("Closing the loop", "\n".join(body)))

    if f["on_time_per_rep"]:
        reps = sorted(f["on_time_per_rep"].items(), key=lambda item: item[1]["rate"] or 0)
        body = [f"Logged within 24 hours: {b(pct(f['on_time_rate']))}"]
        body.extend(
            f"{mention(who)}: {s['on_time']}/{s['entries']}"
            + (" (fewer than 5 deals)" if s["entries"] < 5 else "")
            for who, s in reps[:10]
        )
        parts.append(("The 24-hour rule", "\n".join(body)))

    if f["closed_deals"]:
        parts.append(
            (
                "Coverage",
                f"{f['deals_with_entry']} of {f['closed_deals']} closed deals have a win/loss "
                f"entry ({pct(f['coverage'])}).",
            )
        )
    return parts


def digest_message(figures: dict, *, link_base: str = "") -> tuple[str, list[dict]]:
    """The digest for Slack: a header, one section per part, warnings as context."""
    title = f"Closeloop digest — {month_name(figures['month'])}"
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": title}}]
    if not figures["has_data"]:
        text = f"No closed deals, weekly feedback or loop posts in {month_name(figures['month'])}."
        return text, [*blocks, section(text)]
    for warning in figures["warnings"]:
        blocks.append(context(f":warning: {warning}"))
    for heading, body in _sections(
        figures,
        link_base=link_base,
        mention=lambda u: (
            mention(u)
            if u and (u[0] in "UW" or is_forgotten(u))
            else escape_fit(u or "unknown", 80)
        ),
    ):
        blocks.append(section(truncate(f"*{heading}*\n{body}", 3000)))
        if len(blocks) >= MAX_BLOCKS - 1:
            break
    blocks.append(context(f"Figures in {figures['timezone']}; the chart is in the thread."))
    text = (
        f"{title}: {figures['wins']} won, {figures['losses']} lost, win rate "
        f"{pct(figures['win_rate'])}"
    )
    return text, blocks


def digest_text(figures: dict) -> str:
    """The digest for a terminal."""
    title = f"Closeloop digest — {month_name(figures['month'])} ({figures['timezone']})"
    lines = [title, "=" * len(title)]
    if not figures["has_data"]:
        lines.append(
            f"No closed deals, weekly feedback or loop posts in {month_name(figures['month'])}."
        )
        return "\n".join(lines) + "\n"
    lines.extend(f"! {w}" for w in figures["warnings"])
    for heading, body in _sections(
        figures,
        link_base="",
        mention=lambda u: FORMER_COLLEAGUE if is_forgotten(u) else (u or "unknown"),
        bold=str,
    ):
        # undo only our mrkdwn escaping; user text is otherwise printed as typed
        plain = body.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        lines.extend(["", heading, "-" * len(heading), plain])
    return "\n".join(lines) + "\n"
