"""Publishing the Home tab (views.publish, direct: it is idempotent), when a person opens
it and after each change that affects it."""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.blocks import home as home_blocks
from bot.db import session_scope
from bot.models import Member
from bot.people import user_zone
from bot.runtime import Runtime
from bot.services import home as home_svc
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)

MARKETING_CACHE_SECONDS = 300.0


def publish(rt: Runtime, user_id: str) -> bool:
    """Build and publish ``user_id``'s Home tab; False (logged) when Slack refuses."""
    try:
        marketing = user_id in rt.directory.marketing_ids(max_age=MARKETING_CACHE_SECONDS)
    except SLACK_ERRORS:
        log.exception("could not read the marketing group for %s's Home tab", user_id)
        marketing = False
    manager = user_id in rt.settings.sales_managers
    with session_scope(rt.session_factory) as session:
        member = session.get(Member, user_id)
        known_rep = member is not None and member.is_sales
    if not known_rep and not manager:
        try:  # someone the hourly roster sync has not seen yet
            known_rep = user_id in rt.directory.sales_ids()
        except SLACK_ERRORS:
            log.exception("could not read the sales group for %s's Home tab", user_id)
    digest_zone = ZoneInfo(rt.settings.digest_timezone)
    with session_scope(rt.session_factory) as session:
        tz = user_zone(session, rt, user_id, fetch=True)
        is_rep = known_rep or manager
        rep = home_svc.rep_view(session, user_id=user_id, manager=manager) if is_rep else None
        team = (
            home_svc.marketing_view(session, now=rt.now(), tz=digest_zone, leads=rt.settings.leads)
            if marketing
            else None
        )
        admin = (
            home_svc.admin_view(
                session,
                now=rt.now(),
                review_months=rt.settings.leads.review_months,
                owners=bool(rt.settings.leads.definition_owners),
            )
            if user_id in rt.settings.admin_users
            else None
        )
    view = home_blocks.home_view(
        rep=rep,
        marketing=team,
        tz=tz,
        now=rt.now(),
        link_base=rt.directory.workspace_url(),
        admin=admin,
    )
    try:
        rt.client.views_publish(user_id=user_id, view=view)
        return True
    except SLACK_ERRORS:
        log.exception("views.publish for %s failed", user_id)
        return False


def opened(rt: Runtime, user_id: str) -> None:
    """The Home tab was opened: remember it (later changes refresh it) and publish it."""
    with session_scope(rt.session_factory) as session:
        member = session.get(Member, user_id)
        if member is None:
            member = Member(
                user_id=user_id, is_sales=False, first_seen_at=rt.now(), updated_at=rt.now()
            )
            session.add(member)
        member.home_seen_at = rt.now()
    publish(rt, user_id)


def changed(rt: Runtime, *users: str | None, marketing: bool = False) -> None:
    """Refresh the Home tab of ``users`` (and of everyone in marketing) who have opened it
    before (the others see it fresh when they open it); never raises."""
    targets = [u for u in dict.fromkeys(users) if u]
    if marketing:
        try:
            targets.extend(
                u
                for u in rt.directory.marketing_ids(max_age=MARKETING_CACHE_SECONDS)
                if u not in targets
            )
        except SLACK_ERRORS:
            log.exception("could not read the marketing group to refresh Home tabs")
    if not targets:
        return
    with session_scope(rt.session_factory) as session:
        seen = set(
            session.scalars(
                select(Member.user_id).where(
                    Member.user_id.in_(targets), Member.home_seen_at.is_not(None)
                )
            )
        )
    for user_id in (u for u in targets if u in seen):
        try:
            publish(rt, user_id)
        except Exception:  # a Home tab never breaks the change that triggered it
            log.exception("refreshing %s's Home tab failed", user_id)
