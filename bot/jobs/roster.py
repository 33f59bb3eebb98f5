"""The sales team, read from Slack (a user group or SALES_USERS), with their time zones."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from bot.db import session_scope
from bot.runtime import Runtime
from bot.services import roster as roster_svc
from bot.slack.client import SLACK_ERRORS
from bot.slack.directory import Profile

log = logging.getLogger(__name__)

SYNC_EVERY = timedelta(hours=1)
# More stale profiles than this are read from users.list rather than one users.info each.
# users.info is Tier 4 (100+ a minute): a 5,000-rep org's daily refresh would hold the tick
# for 50 minutes. users.list is Tier 2 (20+ a minute) with 200 people a page: 25 pages for
# 5,000 people, a few minutes at most even in a workspace of 20,000.
USERS_INFO_AT_MOST = 20


class RosterSync:
    """Reads the sales team from Slack and stores it; remembers when it last did."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.last: datetime | None = None

    def due(self) -> bool:
        return self.last is None or self.rt.now() - self.last >= SYNC_EVERY

    def __call__(self) -> list[str]:
        """Read the sales team, store it, and fetch missing or stale time zones."""
        rt = self.rt
        now = rt.now()
        ids = rt.directory.sales_ids()
        with session_scope(rt.session_factory) as session:
            roster_svc.set_sales_members(session, user_ids=ids, now=now)
            stale = roster_svc.needing_profile(session, now=now)
        if stale:
            _refresh_profiles(rt, stale, now=now)
        self.last = now
        return ids


def _refresh_profiles(rt: Runtime, stale: list[str], *, now: datetime) -> None:
    found: dict[str, Profile] = {}
    unknown: list[str] = []
    if len(stale) <= USERS_INFO_AT_MOST:
        for user_id in stale:
            try:
                found[user_id] = rt.directory.profile(user_id)
            except SLACK_ERRORS:
                # keep the zone we knew (or the default); asked again on the next sync
                log.exception("users.info for %s failed; keeping the last known time zone", user_id)
    else:
        try:
            rt.directory.profiles(stale, into=found)
        except SLACK_ERRORS:
            log.exception(
                "users.list failed; keeping the last known time zones of the %d reps not read "
                "yet until the next roster sync",
                len(stale) - len(found),
            )
        else:
            unknown = [user_id for user_id in stale if user_id not in found]
        if unknown:
            log.warning(
                "%d reps are not in users.list (for example %s); keeping their last known "
                "time zones",
                len(unknown),
                unknown[0],
            )
    with session_scope(rt.session_factory) as session:
        roster_svc.record_profiles(session, found, now=now)
        roster_svc.mark_checked(session, user_ids=unknown, now=now)
