"""``/closeloop admin [help | prompt-now | digest | merge-competitor]``: the CLI's commands for
the people in ADMIN_USERS (services.access.require_admin), answered to them alone."""

from __future__ import annotations

import logging
import re
from functools import partial

from slack_bolt import Ack, Respond

from bot.blocks import admin_replies as admin_blocks
from bot.db import session_scope
from bot.jobs import digest as digest_jobs
from bot.jobs.prompts import queue_due_prompts
from bot.jobs.roster import RosterSync
from bot.runtime import Runtime
from bot.services import competitors as competitor_svc
from bot.services.access import require_admin
from bot.services.digest import Month
from bot.services.errors import DomainError
from bot.services.feedback import unescape_slack
from bot.services.outbox import committed_keys
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)

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


def run(ack: Ack, respond: Respond, rt: Runtime, later, *, user_id: str, text: str) -> None:
    """``/closeloop admin [help | prompt-now | digest | merge-competitor]``.

    A non-admin is answered at once (ephemeral) and nothing is stored or sent. Input errors
    are answered at once too. The work itself runs after the ack (within Slack's 3 seconds),
    and its result comes back through the command's response_url, visible to the admin only.
    """
    word, *more = re.split(r"\s+", text.strip(), maxsplit=1)
    word, args = word.lower(), (more[0] if more else "")
    try:
        require_admin(rt.settings, user_id)
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
        work = partial(prompt_now, rt, user_id=user_id, users=users)
    elif word == "digest":
        month = None
        if args.strip():
            try:
                month = Month.parse(args)
            except DomainError:
                ack(text=admin_blocks.bad_month(unescape_slack(args.strip())))
                return
        ack(text=admin_blocks.working("Posting the digest"))
        work = partial(post_digest, rt, user_id=user_id, month=month)
    elif word == "merge-competitor":
        names = parse_merge(args)
        if names is None:
            ack(text=admin_blocks.bad_merge(unescape_slack(args.strip())))
            return
        ack()
        work = partial(merge_competitors, rt, user_id=user_id, source=names[0], target=names[1])
    else:
        ack(text=admin_blocks.unknown_subcommand(unescape_slack(word)))
        return
    later(lambda: respond(text=work(), response_type="ephemeral"))


def prompt_now(rt: Runtime, *, user_id: str, users: list[str] | None) -> str:
    """``closeloop prompt --now [--user ...]`` for an admin; the answer to show them."""
    require_admin(rt.settings, user_id)
    log.info("admin %s: prompt-now %s", user_id, users or "everyone")
    try:
        # Queued only: a fan-out to thousands must not hold a listener thread for minutes;
        # the scheduler role's outbox job sends them within seconds.
        result = queue_due_prompts(rt, RosterSync(rt), only_users=users or None, force=True)
        committed_keys()  # a fan-out: the scheduler role sends it, paced, not this thread
    except SLACK_ERRORS as err:
        log.exception("prompt-now for admin %s failed", user_id)
        return admin_blocks.slack_failed("sending the prompts", str(err))
    return admin_blocks.prompt_result(
        sent=result.sent,
        already=result.already,
        failed=result.failed,
        not_sales=result.not_sales,
        queued=result.queued,
    )


def post_digest(rt: Runtime, *, user_id: str, month: Month | None) -> str:
    """``closeloop digest --post [--month]`` for an admin; the answer to show them."""
    require_admin(rt.settings, user_id)
    month = month or digest_jobs.default_month(rt)
    log.info("admin %s: post the %s digest", user_id, month)
    channel = rt.settings.digest_channel
    if digest_jobs.queue(rt, month):
        if not rt.outbox.stopped:
            rt.outbox.drain()
        posted = digest_jobs.posted_ts(rt, month) is not None
        return admin_blocks.digest_posted(month=str(month), channel=channel, queued=not posted)
    ts = digest_jobs.posted_ts(rt, month)
    return admin_blocks.digest_not_posted(month=str(month), channel=channel, posted=ts is not None)


def merge_competitors(rt: Runtime, *, user_id: str, source: str, target: str) -> str:
    """``closeloop competitors merge A B`` for an admin; the answer to show them."""
    require_admin(rt.settings, user_id)
    try:
        with session_scope(rt.session_factory) as session:
            src, dst, moved = competitor_svc.merge(session, source=source, target=target)
            src_name, dst_name = src.name, dst.name
    except DomainError as err:  # "No competitor called '...'": quotes what was typed
        return admin_blocks.refused(str(err))
    log.info(
        "admin %s: merged competitor %r into %r (%d moved)", user_id, src_name, dst_name, moved
    )
    return admin_blocks.merged(source=src_name, target=dst_name, moved=moved)
