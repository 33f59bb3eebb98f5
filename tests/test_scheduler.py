"""The scheduler the role starts: the minute tick at once and the outbox poll; the schedule
itself lives in the database, so a restarted process's first tick catches up."""

from __future__ import annotations

import threading
import time

import pytest

from bot import scheduler
from bot.jobs.tick import Tick
from tests.harness import events_of
from tests.test_loop_scenario import FRI_1500_UTC, SAT_0000_UTC, all_text, dms_to


class WaitingScheduler:
    """The real scheduler; giving the role up waits for a running job (the test then empties
    the tables)."""

    def __init__(self, real) -> None:
        self.real = real

    def shutdown(self, wait: bool = False) -> None:
        self.real.shutdown(wait=True)


class CountedTick(Tick):
    """The role's tick, counting the runs that have finished."""

    finished = 0
    done = threading.Condition()

    def __call__(self) -> None:
        try:
            super().__call__()
        finally:
            with CountedTick.done:
                CountedTick.finished += 1
                CountedTick.done.notify_all()

    @classmethod
    def wait(cls, count: int, timeout: float = 15) -> None:
        with cls.done:
            assert cls.done.wait_for(lambda: cls.finished >= count, timeout), "no tick ran"


@pytest.fixture
def started(monkeypatch):
    """The schedulers bot.scheduler.role() starts (its own start() and Tick, observed)."""
    schedulers: list[WaitingScheduler] = []
    real_start = scheduler.start

    def start(rt, tick, **kwargs):
        schedulers.append(WaitingScheduler(real_start(rt, tick, **kwargs)))
        return schedulers[-1]

    monkeypatch.setattr(scheduler, "start", start)
    monkeypatch.setattr(scheduler, "Tick", CountedTick)
    monkeypatch.setattr(CountedTick, "finished", 0)
    return schedulers


def _until(condition, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_role_runs_the_tick_at_once_polls_the_outbox_and_a_restart_catches_up(harness, started):
    h, slack = harness, harness.slack

    def prompts_to(user_id):
        return [c for c in dms_to(slack, user_id) if "What messaging worked" in all_text(c.params)]

    h.clock.set(FRI_1500_UTC)  # 16:00 in Berlin: Ana's prompt is due; 07:00 in LA
    rt = h.another_process(sends=False)  # sends only once it holds the role
    role = scheduler.role(rt, events_of(rt))
    try:
        assert _until(lambda: role.is_leader, timeout=5)
        assert not rt.outbox.stopped
        jobs = {job.id: job.trigger.interval.total_seconds() for job in started[0].real.get_jobs()}
        assert jobs == {"closeloop-tick": 60, "closeloop-outbox": scheduler.OUTBOX_POLL_SECONDS}
        # The first tick runs at once, not a minute later: Ana is prompted, Ben is not due.
        CountedTick.wait(1)
        assert _until(lambda: dms_to(slack, "UANA"), timeout=3 * scheduler.OUTBOX_POLL_SECONDS)
        assert len(dms_to(slack, "UANA")) == 1 and dms_to(slack, "UBEN") == []
        # What another process queues (it does not send) goes out with the next outbox poll,
        # not with the next tick a minute later.
        h.another_process(sends=False).tell("UBEN", "Queued by a web process")
        assert _until(lambda: dms_to(slack, "UBEN"), timeout=3 * scheduler.OUTBOX_POLL_SECONDS)
        (note,) = dms_to(slack, "UBEN")
        assert "Queued by a web process" in all_text(note.params)
        assert CountedTick.finished == 1
    finally:
        role.stop()
    assert rt.outbox.stopped  # giving the role up stops its sending

    # Down over Friday night: Ben's prompt (16:00 in LA) became due meanwhile. The restarted
    # process's first tick sends it, and prompts nobody twice.
    h.clock.set(SAT_0000_UTC.replace(hour=1))
    restarted = h.another_process(sends=False)
    role = scheduler.role(restarted, events_of(restarted))
    try:
        assert _until(lambda: role.is_leader, timeout=5)
        assert len(started) == 2 and not restarted.outbox.stopped
        CountedTick.wait(2)  # its first, at once
        assert _until(lambda: prompts_to("UBEN"), timeout=3 * scheduler.OUTBOX_POLL_SECONDS)
        assert len(prompts_to("UBEN")) == 1 and len(dms_to(slack, "UANA")) == 1
    finally:
        role.stop()
    assert len(dms_to(slack, "UANA")) == 1 and len(dms_to(slack, "UBEN")) == 2
