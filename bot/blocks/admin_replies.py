"""Ephemeral answers to ``/closeloop admin ...``: help, and what each action did."""

from __future__ import annotations

from collections.abc import Sequence

from bot.blocks.elements import escape, escape_fit

HELP = (
    "*Closeloop admin commands* (for the people in ADMIN_USERS):\n"
    "• `/closeloop admin prompt-now [@rep …]` sends this week's feedback prompt now, to "
    "every rep or to those named (never twice in a week)\n"
    "• `/closeloop admin digest [YYYY-MM]` posts that month's digest now (default: last "
    "month; never twice)\n"
    "• `/closeloop admin merge-competitor A into B` folds competitor A into B (quote names "
    'with spaces and "into": `"Acme into" into Acme`)\n'
    "• `/closeloop admin help` shows this\n"
    "The same actions are on the command line: `closeloop prompt --now`, `closeloop digest "
    "--post`, `closeloop competitors merge`."
)


def mentions(user_ids: Sequence[str]) -> str:
    """``<@U1>, <@U2>`` for user IDs that were validated as IDs (never free text)."""
    return ", ".join(f"<@{u}>" for u in user_ids)


def unknown_subcommand(word: str) -> str:
    return f"I don't know the admin command `{escape_fit(word, 40)}`.\n\n{HELP}"


def bad_people(tokens: Sequence[str]) -> str:
    shown = ", ".join(f"`{escape_fit(t, 40)}`" for t in tokens[:5])
    return (
        f"I could not tell who {shown} is, so nobody was prompted. Mention people with the @ "
        "menu (Slack then sends their user IDs) or give user IDs like U0123ABCD."
    )


def bad_month(text: str) -> str:
    return f"`{escape_fit(text, 40)}` is not a month like 2026-10 (YYYY-MM), so nothing was posted."


def bad_merge(text: str) -> str:
    return (
        f"I could not read `{escape_fit(text, 200)}` as `A into B`, so nothing was merged. "
        'Example: `/closeloop admin merge-competitor Competitor-X into "Competitor X"`.'
    )


def working(what: str) -> str:
    """The immediate answer (the work follows the acknowledgement)."""
    return f":hourglass_flowing_sand: {what}…"


def prompt_result(
    *,
    sent: Sequence[str],
    already: Sequence[str],
    failed: Sequence[str],
    not_sales: Sequence[str],
    queued: Sequence[str] = (),
) -> str:
    """What ``prompt-now`` did, as ``closeloop prompt --now`` prints it."""
    lines = []
    if sent:
        lines.append(f":white_check_mark: Prompted {mentions(sent)}.")
    if queued:
        lines.append(
            f":hourglass_flowing_sand: Queued for {mentions(queued)}: the process holding the "
            "scheduler role sends them within seconds (and retries any Slack refuses)."
        )
    if already:
        lines.append(f"Already had this week's prompt: {mentions(already)}.")
    if not_sales:
        lines.append(
            f"Not in the sales team (SALES_USERS / SALES_USERGROUP), not prompted: "
            f"{mentions(not_sales)}."
        )
    if failed:
        lines.append(
            f":warning: Slack refused the DM to {mentions(failed)} for good (see the log)."
        )
    lines.append(
        f"{len(sent)} prompted, {len(queued)} queued, {len(already)} already had this week's "
        f"prompt, {len(failed)} failed."
    )
    return "\n".join(lines)


def slack_failed(action: str, error: str) -> str:
    return (
        f":warning: Slack refused the request while {action} ({escape_fit(error, 200)}). "
        "Nothing was sent twice; try again in a minute."
    )


def digest_posted(*, month: str, channel: str, queued: bool = False) -> str:
    if queued:
        return (
            f":white_check_mark: The {month} digest is on its way to <#{channel}> (it appears "
            "within seconds, once Slack takes it; it is never posted twice)."
        )
    return f":white_check_mark: Posted the {month} digest to <#{channel}>."


def digest_not_posted(*, month: str, channel: str, posted: bool) -> str:
    if posted:
        return f"The {month} digest is already in <#{channel}>, so it was not posted again."
    return (
        f":warning: The {month} digest did not reach <#{channel}>: another process is posting "
        "it, or Slack refused it (is Closeloop invited there?). Nothing was posted twice; try "
        "again in ten minutes if it has not appeared."
    )


def merged(*, source: str, target: str, moved: int) -> str:
    entries = "entry" if moved == 1 else "entries"
    return (
        f":white_check_mark: Merged *{escape(source)}* into *{escape(target)}*: {moved} "
        f"{entries} moved; future spellings of {escape(source)} count as {escape(target)}."
    )


def refused(message: str) -> str:
    """A service's refusal, which may quote what the admin typed: escaped."""
    return escape(message)
