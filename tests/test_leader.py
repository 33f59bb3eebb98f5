"""Exactly one process holds the scheduler role; a survivor takes over when it dies."""

from __future__ import annotations

import time

from bot.leader import SchedulerRole


class FakeScheduler:
    def __init__(self, log, name):
        self.log, self.name = log, name
        log.append(("start", name))

    def shutdown(self, wait=False):
        self.log.append(("stop", self.name))


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_one_leader_and_a_takeover(engine):
    log = []
    roles = [
        SchedulerRole(
            engine=engine, poll_seconds=0.1, start_scheduler=lambda n=n: FakeScheduler(log, n)
        )
        for n in ("a", "b", "c")
    ]
    for role in roles:
        role.start()
    try:
        wait_until(lambda: sum(r.is_leader for r in roles) == 1)
        time.sleep(0.5)  # several polls later, still exactly one
        assert sum(r.is_leader for r in roles) == 1
        leader = next(r for r in roles if r.is_leader)
        leader.stop()  # the leader goes away (as if its process died)
        survivors = [r for r in roles if r is not leader]
        wait_until(lambda: sum(r.is_leader for r in survivors) == 1, timeout=5)
        assert [e for e in log if e[0] == "start"].__len__() == 2
    finally:
        for role in roles:
            role.stop()
    assert sum(r.is_leader for r in roles) == 0


def test_killed_leader_process_is_replaced(cli_env):
    """Two `closeloop scheduler` processes: one leads; SIGKILL it and the other takes over."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    env = {**cli_env, "CLOSELOOP_SCHEDULER_POLL": "0.5"}
    procs, lines = [], {}

    def read(proc):
        for line in proc.stderr:
            lines.setdefault(proc.pid, []).append(line)

    try:
        for _ in range(2):
            proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "scheduler"],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            threading.Thread(target=read, args=(proc,), daemon=True).start()

        def leaders():
            return [
                p for p in procs if any("now runs the scheduler" in x for x in lines.get(p.pid, []))
            ]

        wait_until(lambda: len(leaders()) == 1, timeout=30)
        time.sleep(1.5)
        assert len(leaders()) == 1
        leader = leaders()[0]
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait(10)
        survivor = next(p for p in procs if p is not leader)
        started = time.monotonic()
        wait_until(lambda: survivor in leaders(), timeout=60)
        assert time.monotonic() - started < 60
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
