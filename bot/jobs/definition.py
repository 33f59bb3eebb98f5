"""The definition's periodic review: at the start of each period (a quarter by default,
DEFINITION_REVIEW_MONTHS) its owners are asked about the one that ended, once."""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from bot.db import session_scope
from bot.runtime import Runtime
from bot.services import definition as definition_svc
from bot.services import installation
from bot.services.definition import Period

log = logging.getLogger(__name__)


def ask_due_review(rt: Runtime) -> bool:
    """The tick's step: from the first working day after a period, at DIGEST_TIME in
    DIGEST_TIMEZONE, each owner (DEFINITION_OWNERS) gets the review DM for that period;
    once across restarts and processes (the unique period row). A period that ended before
    the installation began (its first tick) is never asked about. True when asked now."""
    s = rt.settings
    owners = s.leads.definition_owners
    if not owners:
        return False
    tz = ZoneInfo(s.digest_timezone)
    now = rt.now()
    period = Period.containing(now, tz, s.leads.review_months).previous()
    if now < definition_svc.review_due_at(period, at=s.digest_time, tz=tz):
        return False
    with session_scope(rt.session_factory) as session:
        began = installation.record_start(session, now=now)
        if period.bounds(tz)[1] <= began:
            return False
        review = definition_svc.ask_review(session, period=period, owners=owners, now=now)
    if review is None:
        return False
    log.info("asked %d owner(s) to review the definition for %s", len(owners), period)
    return True
