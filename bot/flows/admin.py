"""Admin actions from Slack (``/closeloop admin ...``): the same flows the CLI runs, each
checked against ADMIN_USERS first (services.access.require_admin), whoever calls it."""

from __future__ import annotations

import logging

from sqlalchemy import select

from bot.blocks import admin as admin_blocks
from bot.db import session_scope
from bot.models import Digest
from bot.runtime import SLACK_ERRORS, Runtime
from bot.services import DomainError
from bot.services import competitors as competitor_svc
from bot.services.access import require_admin
from bot.services.digest import Month

log = logging.getLogger(__name__)


def check(rt: Runtime, user_id: str) -> None:
    """Raise NotAllowed unless ``user_id`` is in ADMIN_USERS (instant: settings only)."""
    require_admin(rt.settings, user_id)


def prompt_now(rt: Runtime, *, user_id: str, users: list[str] | None) -> str:
    """``closeloop prompt --now [--user ...]`` for an admin; the answer to show them."""
    from bot.flows import send_due_prompts

    check(rt, user_id)
    log.info("admin %s: prompt-now %s", user_id, users or "everyone")
    try:
        # Queued only: a fan-out to thousands must not hold a listener thread for minutes;
        # the scheduler role's outbox job sends them within seconds.
        result = send_due_prompts(rt, only_users=users or None, force=True, send=False)
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
    from bot.flows import digest as digest_flows

    check(rt, user_id)
    month = month or digest_flows.default_month(rt)
    log.info("admin %s: post the %s digest", user_id, month)
    ts = digest_flows.post(rt, month)
    channel = rt.settings.digest_channel
    if ts is not None:
        return admin_blocks.digest_posted(month=str(month), channel=channel)
    with session_scope(rt.session_factory) as session:
        posted = session.scalar(
            select(Digest.ts).where(Digest.month == month.first_day, Digest.ts.is_not(None))
        )
    return admin_blocks.digest_not_posted(
        month=str(month), channel=channel, posted=posted is not None
    )


def merge_competitors(rt: Runtime, *, user_id: str, source: str, target: str) -> str:
    """``closeloop competitors merge A B`` for an admin; the answer to show them."""
    check(rt, user_id)
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
