"""People's time zones: as last read from Slack (the members table), else the default."""

from __future__ import annotations

import logging
from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from bot.db import session_scope
from bot.models import Member
from bot.runtime import Runtime
from bot.services import roster as roster_svc
from bot.services.calendar import zone
from bot.slack.client import SLACK_ERRORS

log = logging.getLogger(__name__)


def user_zone(session: Session, rt: Runtime, user_id: str, *, fetch: bool = False) -> ZoneInfo:
    """The user's time zone as last read from Slack, else DEFAULT_TIMEZONE. ``fetch`` reads
    users.info for someone Closeloop has not met yet (a manager, say) and remembers it."""
    member = session.get(Member, user_id)
    if member is None and fetch and user_id:
        try:
            tz, name = rt.directory.profile(user_id)
        except SLACK_ERRORS:
            log.warning("users.info for %s failed; using DEFAULT_TIMEZONE", user_id)
        else:
            roster_svc.record_profile(session, user_id=user_id, tz=tz, name=name, now=rt.now())
            return zone(tz, rt.settings.default_timezone)
    return zone(member.tz if member else None, rt.settings.default_timezone)


def today_for(rt: Runtime, user_id: str) -> date:
    """The user's own date today."""
    with session_scope(rt.session_factory) as session:
        return rt.now().astimezone(user_zone(session, rt, user_id, fetch=True)).date()
