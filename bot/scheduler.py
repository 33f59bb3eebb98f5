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
_runtime: Runtime | None = None  # the process's runtime, set by start(); jobs are stored by name


def tick_job() -> None:
    """The stored job: run one tick with this process's runtime."""
    from bot.flows import tick

    if _runtime is None:
        log.warning("tick fired before the scheduler was started; skipping")
        return
    tick(_runtime)


def start(rt: Runtime, *, engine=None) -> BackgroundScheduler:
    """Start the background scheduler with its job store in the bot's database."""
    global _runtime
    _runtime = rt
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
    return scheduler
