"""APScheduler with a persistent job store: one job, the minute tick (see bot.flows.tick).

The durable state of the schedule is the database itself (prompt rows with their reminder and
closing times), so a restart loses nothing: the next tick sends whatever became due meanwhile.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.runtime import Runtime

log = logging.getLogger(__name__)

TICK_JOB_ID = "closeloop-tick"
OUTBOX_JOB_ID = "closeloop-outbox"
OUTBOX_POLL_SECONDS = 5  # messages queued by web processes (deal nudges) wait at most this
_runtime: Runtime | None = None  # the process's runtime, set by start(); jobs are stored by name


def tick_job() -> None:
    """The stored job: run one tick with this process's runtime."""
    from bot.flows import tick

    if _runtime is None:
        log.warning("tick fired before the scheduler was started; skipping")
        return
    tick(_runtime)


def outbox_job() -> None:
    """The stored job: send what web processes and CLI commands queued meanwhile."""
    from bot.flows import outbox

    if _runtime is not None:
        outbox.drain(_runtime)


def role(rt: Runtime):
    """This process's :class:`bot.leader.SchedulerRole` (started): it runs the scheduler, and
    sends the outbox, only while it holds the database-wide lock."""
    from bot.leader import SchedulerRole

    def given_up() -> None:
        rt.sends_outbox = False

    return SchedulerRole(
        engine=rt.session_factory.kw["bind"],
        start_scheduler=lambda: start(rt),
        on_give_up=given_up,
    ).start()


def start(rt: Runtime, *, engine=None) -> BackgroundScheduler:
    """Start the background scheduler with its job store in the bot's database.

    Called only by the process holding the scheduler role, which is the only one that
    sends the outbox: the claims a dead holder left are released first, so what it was
    sending is finished now (each message looked for in Slack before it is sent again).
    """
    from bot.flows import outbox

    global _runtime
    _runtime = rt
    outbox.recover(rt)
    rt.sends_outbox = True
    if engine is None:
        engine = rt.session_factory.kw["bind"]
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        timezone="UTC",
    )
    scheduler.start()
    scheduler.add_job(
        "bot.scheduler:tick_job",
        IntervalTrigger(minutes=1),
        id=TICK_JOB_ID,
        name="Closeloop minute tick",
        replace_existing=True,
        next_run_time=datetime.now(UTC),  # catch up at once after a restart
    )
    scheduler.add_job(
        "bot.scheduler:outbox_job",
        IntervalTrigger(seconds=OUTBOX_POLL_SECONDS),
        id=OUTBOX_JOB_ID,
        name="Closeloop outbox",
        replace_existing=True,
    )
    return scheduler
