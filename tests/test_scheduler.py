"""APScheduler with its job store in the bot's database: the tick survives restarts."""

from __future__ import annotations

from sqlalchemy import text

from bot import scheduler
from tests.test_loop_scenario import FRI_1500_UTC, dms_to


def _stored_jobs(engine):
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT id FROM apscheduler_jobs"))]


def test_tick_job_is_persisted_runs_and_survives_restart(harness, engine):
    h, slack = harness, harness.slack
    h.clock.set(FRI_1500_UTC)
    sched = scheduler.start(h.rt, engine=engine)
    try:
        assert sorted(_stored_jobs(engine)) == [scheduler.OUTBOX_JOB_ID, scheduler.TICK_JOB_ID]
        slack.wait_for("chat.postMessage", count=1, timeout=15)  # the first tick runs at once
    finally:
        sched.shutdown(wait=True)
    assert len(dms_to(slack, "UANA")) == 1
    # A restarted process finds the stored job, replaces it (one row) and prompts nobody twice.
    sched = scheduler.start(h.rt, engine=engine)
    try:
        assert sorted(_stored_jobs(engine)) == [scheduler.OUTBOX_JOB_ID, scheduler.TICK_JOB_ID]
        job = sched.get_job(scheduler.TICK_JOB_ID)
        assert job is not None and job.trigger.interval.total_seconds() == 60
    finally:
        sched.shutdown(wait=True)
    assert len(dms_to(slack, "UANA")) == 1
