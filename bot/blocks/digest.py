"""The monthly digest as Block Kit (for Slack) and as plain text (for the terminal)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

from bot.blocks.elements import FORMER_COLLEAGUE, context, escape_fit, section, truncate
from bot.blocks.winloss import OUTCOMES
from bot.models import is_forgotten

MAX_BLOCKS = 50
LABEL = dict(OUTCOMES)  # "Won", "Lost", "No decision": as in the /winloss form
POST_KIND = {"winloss": "win/loss entry", "feedback": "feedback"}
CHART_PROMISE = "the chart is in the thread"
NO_CHART = "the chart could not be drawn this month"
CHART_REFUSED = "the chart could not be uploaded: Slack refused it ({why})"


def month_name(month: str) -> str:
    year, number = (int(part) for part in month.split("-"))
    return date(year, number, 1).strftime("%B %Y")


def pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.0%}"


def ratio(part: int, whole: int, min_sample: int) -> str:
    """A rate with its count: "60% (3 of 5)"; below ``min_sample``, the count alone."""
    if not whole:
        return "—"
    if whole < min_sample:
        return f"{part} of {whole}"
    return f"{part / whole:.0%} ({part} of {whole})"


def amount(value: str | None, currency: str) -> str:
    """``"12500.00"`` -> ``$12,500`` in US dollars, ``12,500 EUR`` in any other currency
    (the ISO code after the number); cents only when there are some."""
    number = f"{Decimal(value or 0):,.2f}".removesuffix(".00")
    return f"${number}" if currency == "USD" else f"{number} {currency}"


def change(delta: float | None, previous: str) -> str:
    if delta is None:
        return ""
    points = round(delta * 100)
    arrow = "▲" if points > 0 else "▼" if points < 0 else "="
    return f", {arrow} {abs(points)} pts vs {month_name(previous)}"


def permalink(base: str, channel: str, ts: str) -> str:
    return f"{base.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"


def _quote(text: str, limit: int = 280) -> str:
    return "> “" + escape_fit(" ".join(text.split()), limit) + "”"


def _sections(
    figures: dict, *, link_base: str, person, bold=lambda text: f"*{text}*"
) -> list[tuple[str, str]]:
    """(title, body) pairs; ``person(user)`` names someone (never a Slack mention: the
    digest pings nobody), ``bold`` our own emphasis (the terminal has none; user text is
    never touched)."""
    b = bold
    f = figures
    n = f["min_sample"]
    money = f["currency"]
    prev = f["previous"]
    parts: list[tuple[str, str]] = []
    decided = f["wins"] + f["losses"]
    lines = [
        f"{LABEL['won']} {b(f['wins'])} · {LABEL['lost']} {b(f['losses'])} · "
        f"{LABEL['no_decision']} {b(f['no_decisions'])}",
        f"Win rate {b(ratio(f['wins'], decided, n))}"
        + (change(f["win_rate_change"], prev["month"]) if decided >= n else ""),
    ]
    if f["amount_won"] or f["amount_lost"]:
        lines.append(
            f"Amount {LABEL['won'].lower()} {amount(f['amount_won'], money)} · "
            f"{LABEL['lost'].lower()} {amount(f['amount_lost'], money)}"
        )
    if decided == 0 and f["no_decisions"] == 0:
        lines = ["No deals closed this month."]
    parts.append(("Wins and losses", "\n".join(lines)))

    if f["loss_reasons_by_category"]:
        body = []
        for category, count in f["loss_reasons_by_category"].items():
            body.append(f"{b(escape_fit(category, 80))} — {count}")
            body.extend(_quote(q["quote"]) for q in f["loss_quotes"].get(category, [])[:3])
        parts.append(("Why we lost, in the customers' words", "\n".join(body)))
    if f.get("reasons_shorthand"):  # imported history: a label, not the customer's words
        parts.append(
            (
                "Shorthand reasons",
                f"{f['reasons_shorthand']} of {f['reasons_total']} reasons are shorthand (a "
                "label or a few words, from imported history), not the customer's words.",
            )
        )

    if f["competitors"]:
        body = [
            f"{escape_fit(name, 80)}: {s['deals']} deal(s) — {LABEL['won']} {s['wins']} · "
            f"{LABEL['lost']} {s['losses']}"
            for name, s in list(f["competitors"].items())[:10]
        ]
        if f["rising_competitors"]:
            body.append("Rising: " + ", ".join(escape_fit(c, 80) for c in f["rising_competitors"]))
        parts.append(("Competitors", "\n".join(body)))

    if f["best_insights"]:
        body = [
            ("✅ " if i["acknowledged"] else "• ")
            + escape_fit(i["insight"], 280)
            + (f" — {person(i['by'])}" if i["by"] else "")
            for i in f["best_insights"]
        ]
        parts.append(("Best insights for marketing", "\n".join(body)))

    fb = f["feedback"]
    if fb["prompted"] or fb["still_open"]:
        body = []
        if fb["prompted"]:
            body.append(
                "Responses per week: "
                + ", ".join(
                    f"{w['week_start'][5:]} {ratio(w['responded'], w['prompted'], n)}"
                    for w in fb["weeks"]
                )
            )
            body.append(
                f"{fb['reps_always_responded']} of {fb['reps_prompted']} reps answered every "
                "closed week."
            )
        if fb["still_open"]:
            body.append(f"{fb['still_open']} prompt(s) for a week still open are not counted yet.")
        if fb["reps_missing"]:
            body.append(
                "Weeks missed (each rep is told privately): "
                + ", ".join(
                    f"{person(r['user_id'])} ({r['missed']})" for r in fb["reps_missing"][:10]
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
                + ", ".join(f"“{escape_fit(phrase, 60)}” ({c})" for phrase, c in fb["objections"])
            )
        parts.append(("Weekly feedback", "\n".join(body)))

    if f["loop_posts"]:
        body = [
            f"Marketing acknowledged {b(ratio(f['acknowledged'], f['loop_posts'], n))} "
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
                    f"<{permalink(link_base, o['channel'], o['ts'])}|{_kind(o)}>"
                    if link_base
                    else _kind(o)
                )
                + f" from {person(o['author'])}"
                for o in f["open_loops"][:10]
            ]
            body.append(f"Still open after 7 days ({len(f['open_loops'])}): " + ", ".join(links))
        parts.append(("Closing the loop", "\n".join(body)))

    if f["on_time_per_rep"]:
        reps = sorted(f["on_time_per_rep"].items(), key=lambda item: item[1]["rate"] or 0)
        body = [f"Logged within 24 hours: {b(ratio(f['on_time'], f['on_time_entries'], n))}"]
        body.extend(
            f"{person(who)}: {ratio(s['on_time'], s['entries'], n)}" for who, s in reps[:10]
        )
        parts.append(("The 24-hour rule", "\n".join(body)))

    if f["closed_deals"]:
        parts.append(
            (
                "Coverage",
                f"Closed deals with a win/loss entry: "
                f"{ratio(f['deals_with_entry'], f['closed_deals'], n)}.",
            )
        )
    parts.extend(_lead_parts(f, bold=b))
    return parts


def _lead_parts(f: dict, *, bold) -> list[tuple[str, str]]:
    """Lead quality: the rejection rate by source and its trend, SLA compliance, and win
    rate and revenue by the source deals carry."""
    leads, n, b = f.get("leads"), f["min_sample"], bold
    if not leads:
        return []
    parts: list[tuple[str, str]] = []
    if leads["handed_over"]:
        trend = ""
        if leads["rated"] >= n and leads["previous_rated"] >= n:
            trend = change(
                leads["rejection_rate"] - leads["previous_rejection_rate"],
                f["previous"]["month"],
            )
        lines = [
            f"{b(leads['handed_over'])} lead(s) handed to sales · rejected "
            f"{b(ratio(leads['rejected'], leads['rated'], n))}{trend} · rated within the SLA "
            f"{b(ratio(leads['sla_on_time'], leads['sla_due'], n))}"
        ]
        for group in leads["by_source"][:8]:
            name = escape_fit(group["name"] or "no source", 80)
            was = (
                f", was {pct(group['previous_rejection_rate'])}"
                if group["previous_rated"] >= n and group["rated"] >= n
                else ""
            )
            flag = " :warning:" if group["flagged"] else ""
            lines.append(
                f"• {name}: {group['handed_over']} handed over, rejected "
                f"{ratio(group['rejected'], group['rated'], n)}{was}{flag}"
            )
        parts.append(("Lead quality", "\n".join(lines)))
    if leads["deals_by_source"]:
        lines = [
            f"• {escape_fit(g['source'], 80)}: won {ratio(g['wins'], g['wins'] + g['losses'], n)}"
            + (f", {amount(g['revenue'], f['currency'])} won" if g["revenue"] else "")
            for g in leads["deals_by_source"][:8]
        ]
        parts.append(("Deals by source", "\n".join(lines)))
    return parts


def _kind(loop: dict) -> str:
    return POST_KIND.get(loop["kind"], loop["kind"])


def _name(figures: dict, user_id: str | None) -> str:
    """Someone named without a ping: their Slack name as stored, else their ID as text."""
    if user_id and is_forgotten(user_id):
        return FORMER_COLLEAGUE
    return figures["names"].get(user_id or "") or user_id or "unknown"


def digest_message(figures: dict, *, link_base: str = "") -> tuple[str, list[dict]]:
    """The digest for Slack: a header, one section per part, warnings as context. It names
    people without mentioning them: nobody is pinged, least of all for a missed week."""
    title = f"Closeloop digest — {month_name(figures['month'])}"
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": title}}]
    if not figures["has_data"]:
        text = f"No closed deals, weekly feedback or loop posts in {month_name(figures['month'])}."
        return text, [*blocks, section(text)]
    for warning in figures["warnings"]:
        blocks.append(context(f":warning: {warning}"))
    for heading, body in _sections(
        figures, link_base=link_base, person=lambda u: escape_fit(_name(figures, u), 80)
    ):
        blocks.append(section(truncate(f"*{heading}*\n{body}", 3000)))
        if len(blocks) >= MAX_BLOCKS - 1:
            break
    blocks.append(context(f"Figures in {figures['timezone']}; {CHART_PROMISE}."))
    decided = figures["wins"] + figures["losses"]
    text = (
        f"{title}: {figures['wins']} won, {figures['losses']} lost, win rate "
        f"{ratio(figures['wins'], decided, figures['min_sample'])}"
    )
    return text, blocks


def without_chart_promise(blocks: list[dict], instead: str = NO_CHART) -> list[dict]:
    """The digest's blocks, saying ``instead`` (the chart could not be drawn) where they
    promised the chart."""
    safe = json.dumps(instead, ensure_ascii=False)[1:-1]  # a string inside the JSON text
    text = json.dumps(blocks, ensure_ascii=False).replace(CHART_PROMISE, safe)
    return json.loads(text)


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
        person=lambda u: _name(figures, u),
        bold=str,
    ):
        # undo only our mrkdwn escaping; user text is otherwise printed as typed
        plain = body.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        lines.extend(["", heading, "-" * len(heading), plain])
    return "\n".join(lines) + "\n"


def missed_weeks_dm(*, month: str, weeks: list[date], channel: str) -> tuple[str, list[dict]]:
    """A rep's private note about their own missed weeks (the channel names nobody)."""
    listed = ", ".join(f"the week of {w:%b} {w.day}" for w in weeks)
    text = (
        f"A note just for you: the {month_name(month)} digest in <#{channel}> counts no "
        f"weekly feedback from you for {listed}. It names nobody in the channel for it. "
        "If you were away, there is nothing to do; otherwise, Friday's prompt is the next "
        "chance to tell marketing what you heard."
    )
    return text, [section(text)]
