"""The monthly digest: computed, rendered and queued once per month, on schedule or on
demand; its chart follows in its thread (bot.delivery.kinds)."""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.blocks import digest as digest_blocks
from bot.db import session_scope
from bot.models import Digest
from bot.runtime import Runtime
from bot.services import digest as digest_svc
from bot.services import installation, outgoing
from bot.services.calendar import local_instant
from bot.services.digest import Month

log = logging.getLogger(__name__)


def zone_of(rt: Runtime) -> ZoneInfo:
    return ZoneInfo(rt.settings.digest_timezone)


def compute(rt: Runtime, session: Session, month: Month, now: datetime) -> dict:
    return digest_svc.compute(
        session,
        month=month,
        tz=zone_of(rt),
        now=now,
        min_sample=rt.settings.digest_min_sample,
        currency=rt.settings.currency,
        rejection_alert=rt.settings.leads.rejection_alert,
        lead_min_sample=rt.settings.leads.min_sample,
    )


def figures(rt: Runtime, month: Month) -> dict:
    with session_scope(rt.session_factory) as session:
        return compute(rt, session, month, rt.now())


def default_month(rt: Runtime) -> Month:
    """The month a digest posted now would cover: the previous calendar month."""
    return Month.containing(rt.now(), zone_of(rt)).previous()


def scheduled_at(rt: Runtime, month: Month) -> datetime:
    """When the digest for ``month`` is due: the next month's first working day, DIGEST_TIME."""
    return local_instant(
        digest_svc.first_working_day(month.next()), rt.settings.digest_time, zone_of(rt)
    )


def queue(rt: Runtime, month: Month) -> bool:
    """Queue ``month``'s digest, once ever (the unique month row); False when it was."""
    now = rt.now()
    link_base = rt.directory.workspace_url()  # before the transaction: it may read Slack
    with session_scope(rt.session_factory) as session:
        row = Digest(month=month.first_day, created_at=now, channel=rt.settings.digest_channel)
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            return False
        data = compute(rt, session, month, now)
        text, blocks = digest_blocks.digest_message(data, link_base=link_base)
        outgoing.digest(session, row, text=text, blocks=blocks, now=now)
        for rep in data["feedback"]["reps_missing"]:  # told privately, not in the channel
            outgoing.digest_missed(session, row, user_id=rep["user_id"], now=now)
    return True


def posted_ts(rt: Runtime, month: Month) -> str | None:
    """The digest's ts in Slack, once it is posted."""
    with session_scope(rt.session_factory) as session:
        return session.scalar(select(Digest.ts).where(Digest.month == month.first_day))


def queued_before(rt: Runtime, month: Month) -> bool:
    """True when ``month``'s digest was queued (or posted) already: ``queue`` would not."""
    with session_scope(rt.session_factory) as session:
        return session.scalar(select(Digest.id).where(Digest.month == month.first_day)) is not None


def post(rt: Runtime, month: Month) -> str | None:
    """Queue ``month``'s digest and send it now when this process sends the outbox; its ts
    when this call posted it, None when it was queued before or is not out yet."""
    if not queue(rt, month):
        return None
    if not rt.outbox.stopped:
        rt.outbox.drain()
    return posted_ts(rt, month)


def post_due_digest(rt: Runtime) -> bool:
    """The tick's step: last month's digest, from the first working day at DIGEST_TIME on.

    A bot that was down then posts it when it comes back; the unique month row makes it
    once across restarts and processes. A month that ended before the installation began
    (its first tick) is never posted: there is nothing in it but an empty page."""
    month = default_month(rt)
    now = rt.now()
    if now < scheduled_at(rt, month):
        return False
    with session_scope(rt.session_factory) as session:
        began = installation.record_start(session, now=now)
    if month.bounds(zone_of(rt))[1] <= began:
        return False
    return queue(rt, month)
