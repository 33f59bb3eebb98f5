"""Slash commands."""

from __future__ import annotations

import logging
import re
from functools import partial

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot import flows
from bot.blocks import admin as admin_blocks
from bot.blocks import winloss as wl_blocks
from bot.flows import admin as admin_flows
from bot.flows import winloss as wl_flows
from bot.runtime import Runtime
from bot.services import DomainError
from bot.services.digest import Month
from bot.services.feedback import unescape_slack

log = logging.getLogger(__name__)

HELP = (
    "*Closeloop* sends sales reps three questions every Friday and takes the answers to "
    "marketing.\n"
    "• `/closeloop` opens this week's feedback form (or edits your answer)\n"
    "• `/closeloop help` shows this\n"
    "• `/closeloop admin` lists the admin commands (for the people in ADMIN_USERS)\n"
    "You can also reply to the Friday DM with three bullet lines."
)

# <@U123> or, as Slack escapes a mention picked from the @ menu, <@U123|ana>
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
_MERGE = re.compile(
    r'^\s*(?:"(?P<qa>[^"]+)"|(?P<a>.+?))\s+into\s+(?:"(?P<qb>[^"]+)"|(?P<b>.+?))\s*$',
    re.IGNORECASE | re.DOTALL,
)


def parse_people(text: str) -> tuple[list[str], list[str]]:
    """(user IDs, tokens that are not people) from ``<@U1> <@U2|ben>, U3`` style text."""
    ids = [m.group(1) for m in _MENTION.finditer(text)]
    bad = []
    for token in re.split(r"[\s,]+", _MENTION.sub(" ", text)):
        if not token:
            continue
        if _USER_ID.match(token):
            ids.append(token)
        else:
            bad.append(unescape_slack(token))
    return list(dict.fromkeys(ids)), bad


def parse_merge(text: str) -> tuple[str, str] | None:
    """``A into B`` (names may be "quoted") -> (A, B); None when it is not that shape."""
    plain = unescape_slack(text).replace("\u201c", '"').replace("\u201d", '"')
    match = _MERGE.match(plain)
    if not match:
        return None
    source = (match["qa"] or match["a"] or "").strip()
    target = (match["qb"] or match["b"] or "").strip()
    return (source, target) if source and target else None


def closeloop_command(
    ack: Ack, command: dict, client: WebClient, context: dict, respond: Respond
) -> None:
    """``/closeloop [help]``; ``/closeloop admin ...`` for admins."""
    raw = (command.get("text") or "").strip()
    first, *rest = re.split(r"\s+", raw, maxsplit=1)
    if first.lower() == "admin":
        text = rest[0] if rest else ""
        admin_command(
            ack, respond, context["rt"], context["later"], user_id=command["user_id"], text=text
        )
        return
    text = raw.lower()
    if text not in ("", "answer", "feedback"):
        ack(text=HELP)
        return
    ack()  # before any database work: the form opens after the ack (its trigger_id lives 3 s)
    rt: Runtime = context["rt"]
    user_id, trigger_id = command["user_id"], command["trigger_id"]

    def open_form() -> None:
        try:
            view = flows.current_feedback_view(rt, user_id=user_id)
        except DomainError as err:
            respond(text=str(err), response_type="ephemeral")  # no open prompt: say so
            return
        client.views_open(trigger_id=trigger_id, view=view)

    context["open_modal"](open_form)


def admin_command(
    ack: Ack, respond: Respond, rt: Runtime, later, *, user_id: str, text: str
) -> None:
    """``/closeloop admin [help | prompt-now | digest | merge-competitor]``.

    A non-admin is answered at once (ephemeral) and nothing is stored or sent. Input errors
    are answered at once too. The work itself runs after the ack (within Slack's 3 seconds),
    and its result comes back through the command's response_url, visible to the admin only.
    """
    word, *more = re.split(r"\s+", text.strip(), maxsplit=1)
    word, args = word.lower(), (more[0] if more else "")
    try:
        admin_flows.check(rt, user_id)
    except DomainError as err:
        log.warning("%s is not an admin: /closeloop admin %s refused", user_id, word[:40])
        ack(text=str(err))
        return
    if word in ("", "help"):
        ack(text=admin_blocks.HELP)
        return
    if word == "prompt-now":
        users, bad = parse_people(args)
        if bad:
            ack(text=admin_blocks.bad_people(bad))
            return
        ack(text=admin_blocks.working("Sending this week's prompt"))
        work = partial(admin_flows.prompt_now, rt, user_id=user_id, users=users)
    elif word == "digest":
        month = None
        if args.strip():
            try:
                month = Month.parse(args)
            except DomainError:
                ack(text=admin_blocks.bad_month(unescape_slack(args.strip())))
                return
        ack(text=admin_blocks.working("Posting the digest"))
        work = partial(admin_flows.post_digest, rt, user_id=user_id, month=month)
    elif word == "merge-competitor":
        names = parse_merge(args)
        if names is None:
            ack(text=admin_blocks.bad_merge(unescape_slack(args.strip())))
            return
        ack()
        work = partial(
            admin_flows.merge_competitors, rt, user_id=user_id, source=names[0], target=names[1]
        )
    else:
        ack(text=admin_blocks.unknown_subcommand(unescape_slack(word)))
        return
    later(lambda: respond(text=work(), response_type="ephemeral"))


def winloss_command(ack: Ack, command: dict, client: WebClient, context: dict) -> None:
    """``/winloss`` opens the form; ``/winloss list`` the caller's waiting deals; ``help``."""
    rt: Runtime = context["rt"]
    text = (command.get("text") or "").strip().lower()
    user_id = command["user_id"]
    if text == "list":
        message, blocks = wl_flows.waiting_list(rt, user_id=user_id)
        ack(text=message, blocks=blocks)
        return
    if text:
        ack(text=wl_blocks.HELP)
        return
    ack()  # first: the trigger_id lives 3 seconds from the command, not from our answer
    context["open_modal"](
        _open_winloss, client, rt, trigger_id=command["trigger_id"], user_id=user_id
    )


def _open_winloss(client: WebClient, rt: Runtime, *, trigger_id: str, user_id: str) -> None:
    client.views_open(trigger_id=trigger_id, view=wl_flows.modal(rt, user_id=user_id))


def register(app: App) -> None:
    app.command("/closeloop")(closeloop_command)
    app.command("/winloss")(winloss_command)
