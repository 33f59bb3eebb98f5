"""The monthly digest: compute, render, post once (with its chart), on schedule or on demand."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bot import chart
from bot.blocks import digest as digest_blocks
from bot.db import session_scope
from bot.models import Digest
from bot.runtime import SLACK_ERRORS, Runtime
from bot.services import digest as digest_svc
from bot.services.calendar import local_instant
from bot.services.digest import Month

log = logging.getLogger(__name__)

DIGEST_MARK = "closeloop_digest"
RECLAIM_AFTER = timedelta(minutes=10)


def zone_of(rt: Runtime) -> ZoneInfo:
    return ZoneInfo(rt.settings.digest_timezone)


def figures(rt: Runtime, month: Month) -> dict:
    with session_scope(rt.session_factory) as session:
        return digest_svc.compute(session, month=month, tz=zone_of(rt), now=rt.now())


def default_month(rt: Runtime) -> Month:
    """The month a digest posted now would cover: the previous calendar month."""
    return Month.containing(rt.now(), zone_of(rt)).previous()


def scheduled_at(rt: Runtime, month: Month) -> datetime:
    """When the digest for ``month`` is due: the next month's first working day, DIGEST_TIME."""
    return local_instant(
        digest_svc.first_working_day(month.next()), rt.settings.digest_time, zone_of(rt)
    )


def _claim(rt: Runtime, month: Month) -> tuple[bool, int]:
    """Claim the month's digest row; (claimed, attempts). A stale unposted claim is retaken."""
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        try:
            with session.begin_nested():
                session.add(
                    Digest(
                        month=month.first_day, claimed_at=now, channel=rt.settings.digest_channel
                    )
                )
            return True, 1
        except IntegrityError:
            pass
        row = session.scalars(select(Digest).where(Digest.month == month.first_day)).one()
        if row.ts is not None:
            return False, row.attempts
        taken = session.execute(
            update(Digest)
            .where(
                Digest.id == row.id, Digest.ts.is_(None), Digest.claimed_at < now - RECLAIM_AFTER
            )
            .values(claimed_at=now, attempts=Digest.attempts + 1)
        ).rowcount
        return taken == 1, row.attempts + 1


def post(rt: Runtime, month: Month) -> str | None:
    """Post ``month``'s digest exactly once; its ts, or None if it is (being) posted already."""
    claimed, attempts = _claim(rt, month)
    if not claimed:
        return None
    data = figures(rt, month)
    channel = rt.settings.digest_channel
    marker = {"event_type": DIGEST_MARK, "event_payload": {"month": str(month)}}
    response = None
    if attempts > 1:  # an earlier try may have posted with its answer lost
        try:
            response = rt.find_marked(
                channel=channel, event_type=DIGEST_MARK, key="month", value=str(month)
            )
        except SLACK_ERRORS:
            log.exception("could not check whether the %s digest went out", month)
            return None
    if response is None:
        text, blocks = digest_blocks.digest_message(data, link_base=_link_base(rt))
        response = rt.post(
            channel=channel, text=text, blocks=blocks, metadata=marker, unfurl_links=False
        )
        if response is None:
            return None  # the claim goes stale and a later tick tries again
    with session_scope(rt.session_factory) as session:
        row = session.scalars(select(Digest).where(Digest.month == month.first_day)).one()
        row.ts, row.channel, row.posted_at = response["ts"], response["channel"], rt.now()
    upload_chart(rt, month, data=data)
    return response["ts"]


def upload_chart(rt: Runtime, month: Month, *, data: dict | None = None) -> bool:
    """The chart as a PNG in the digest's thread (files upload v2)."""
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        row = session.scalars(select(Digest).where(Digest.month == month.first_day)).one()
        channel, ts, done = row.channel, row.ts, row.chart_file_id
        if ts is None or done:
            return bool(done)
        claimed = session.execute(  # one process uploads; a stale claim (a crash) is retaken
            update(Digest)
            .where(
                Digest.id == row.id,
                Digest.chart_file_id.is_(None),
                (Digest.chart_claimed_at.is_(None))
                | (Digest.chart_claimed_at < now - RECLAIM_AFTER),
            )
            .values(chart_claimed_at=now)
        ).rowcount
    if claimed != 1:
        return False
    data = data or figures(rt, month)
    with session_scope(rt.session_factory) as session:
        history = digest_svc.win_rate_history(session, month, zone_of(rt))
    png = chart.render(month=str(month), history=history, losses=data["losses_by_competitor"])
    try:
        result = rt.client.files_upload_v2(
            channel=channel,
            thread_ts=ts,
            content=png,
            filename=f"closeloop-digest-{month}.png",
            title=f"Win rate by month and losses by competitor, {month}",
            alt_txt=f"Win rate by month for the six months to {month}, and losses by competitor",
        )
    except SLACK_ERRORS:
        log.exception("uploading the %s digest chart failed; retried later", month)
        with session_scope(rt.session_factory) as session:  # free the claim for the retry
            session.execute(
                update(Digest).where(Digest.month == month.first_day).values(chart_claimed_at=None)
            )
        return False
    with session_scope(rt.session_factory) as session:
        row = session.scalars(select(Digest).where(Digest.month == month.first_day)).one()
        row.chart_file_id = (result.get("file") or {}).get("id") or "uploaded"
    return True


def _link_base(rt: Runtime) -> str:
    """The workspace URL (from auth.test) for message links; "" when unknown."""
    if rt.workspace_url is None:
        try:
            rt.workspace_url = rt.client.auth_test().get("url") or ""
        except SLACK_ERRORS:
            return ""
    return rt.workspace_url


def post_due_digest(rt: Runtime) -> str | None:
    """The scheduled digest: last month's, from the first working day at DIGEST_TIME on.

    A bot that was down then posts it when it comes back; the unique month row makes it
    once across restarts and processes. A chart whose upload failed is retried.
    """
    month = default_month(rt)
    if rt.now() < scheduled_at(rt, month):
        return None
    with session_scope(rt.session_factory) as session:
        row = session.scalars(select(Digest).where(Digest.month == month.first_day)).first()
        state = None if row is None else (row.ts, row.chart_file_id)
    if state is not None and state[0] is not None:
        if state[1] is None:
            upload_chart(rt, month)
        return None
    return post(rt, month)
