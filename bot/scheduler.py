"""APScheduler, in memory: the minute tick and the outbox poll, run only by the process that
holds the scheduler role (bot.leader).

The schedule itself lives in the database (prompt rows with their reminder and closing
times, deals with their deadlines, the outbox), so a restart loses nothing: the first tick
after it does whatever became due meanwhile.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.db import patiently
from bot.event_inbox import EventInbox
from bot.jobs.tick import Tick
from bot.leader import SchedulerRole
from bot.runtime import Runtime

log = logging.getLogger(__name__)

OUTBOX_POLL_SECONDS = 1  # what other processes queued waits at most this long


def start(rt: Runtime, tick: Tick, *, paused: bool = False) -> BackgroundScheduler:
    """Start the background scheduler and sending the outbox (the role was just taken).

    Nothing another process claimed is taken back here: a claim lapses after its lease
    (bot.services.outbox), and its holder stops sending before then. ``paused``: the jobs
    wait for ``resume()`` (tests run the tick by hand)."""
    scheduler = BackgroundScheduler(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        timezone="UTC",
    )
    # Nobody waits on these: they get the longer database limits (bot.db.patient).
    scheduler.add_job(
        patiently(tick),
        IntervalTrigger(minutes=1),
        id="closeloop-tick",
        name="Closeloop minute tick",
        next_run_time=datetime.now(UTC),  # catch up at once after a restart
    )
    scheduler.add_job(
        patiently(rt.outbox.drain),
        IntervalTrigger(seconds=OUTBOX_POLL_SECONDS),
        id="closeloop-outbox",
        name="Closeloop outbox",
    )
    scheduler.start(paused=paused)
    rt.outbox.resume()
    return scheduler


def role(rt: Runtime, events: EventInbox) -> SchedulerRole:
    """This process's scheduler role (started): it runs the scheduler, and sends the outbox,
    only while it holds the database-wide lock. Losing the lock stops the outbox's senders
    first: nothing more starts, and what was claimed is given back."""
    tick = Tick(rt, events)
    return SchedulerRole(
        engine=rt.session_factory.kw["bind"],
        start_scheduler=lambda: start(rt, tick),
        on_give_up=rt.outbox.stop,
    ).start()
