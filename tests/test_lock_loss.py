"""The scheduler's lock is lost mid fan-out, and its holder does not know it yet.

Real processes on PostgreSQL: two ``closeloop scheduler`` processes, 300 reps, and Slack
limiting chat.postMessage to 20 a second (each answered after a second). ``closeloop prompt
--now`` queues the prompts; at the 100th DM the database terminates the backend that holds
the scheduler's advisory lock (as a failover, a proxy reset or an idle-connection killer
would). The old holder is still alive with messages claimed; the other process takes the
role. Every rep must be prompted exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import create_engine, text

from bot.db import normalise_url
from bot.delivery.outbox import MARK
from bot.leader import LOCK_KEY
from tests.harness import seed_sales_roster

REPS = 300
TERMINATE_AT = 100


def _lock_holder(admin) -> int | None:
    with admin.connect() as conn:
        return conn.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objid = :key AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())"
            ),
            {"key": LOCK_KEY},
        ).scalar()


def _wait_for_holder(admin, *, not_pid: int | None = None, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _lock_holder(admin)
        if pid is not None and pid != not_pid:
            return pid
        time.sleep(0.1)
    raise AssertionError("no process took the scheduler role")


def _prompts(fake_slack) -> Counter:
    counts: Counter = Counter()
    for call in fake_slack.calls_to("chat.postMessage"):
        if (call.params.get("metadata") or {}).get("event_type") == MARK:
            channel = call.params["channel"]
            if channel.startswith("UREP"):
                counts[channel] += 1
    return counts


def test_lock_lost_mid_fan_out_every_rep_prompted_exactly_once(
    cli_env, fake_slack, session_factory, database_url
):
    if not database_url.startswith("postgres"):
        pytest.skip("the advisory lock and pg_terminate_backend are PostgreSQL's")
    reps = [f"UREP{n:05d}" for n in range(REPS)]
    seed_sales_roster(fake_slack, session_factory, reps)
    fake_slack.limit_rate("chat.postMessage", per_second=20, burst=5)
    # Each post takes Slack a second to answer: when the lock is cut, a second's worth of
    # the old holder's DMs is still on its way.
    fake_slack.set_latency(1.0, methods=["chat.postMessage"])
    env = {
        **cli_env,
        "SLACK_POST_RATE": "20",
        "OUTBOX_WORKERS": "24",
        "CLOSELOOP_SCHEDULER_POLL": "0.5",
        "OUTBOX_LEASE_SECONDS": "15",
        "LOG_LEVEL": "WARNING",
    }
    admin = create_engine(normalise_url(database_url), isolation_level="AUTOCOMMIT")
    processes: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "scheduler"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        return process

    terminated = threading.Event()
    try:
        start()
        first_holder = _wait_for_holder(admin)
        start()  # waits for the role
        time.sleep(1)

        seen = 0
        lock = threading.Lock()

        def cut_the_lock(_body) -> None:
            nonlocal seen
            with lock:
                seen += 1
                if seen != TERMINATE_AT:
                    return
            threading.Thread(target=terminate, daemon=True).start()

        def terminate() -> None:
            with admin.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_holder})
            terminated.set()

        fake_slack.after_success("chat.postMessage", cut_the_lock)
        queued = subprocess.run(
            [sys.executable, "-m", "bot", "prompt", "--now"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert queued.returncode == 0, queued.stderr[-2000:]
        # The role is held: the command only queues (the holder's first tick may already have
        # queued the reps whose Friday is not over yet in their time zone).
        assert "\n0 prompted, " in queued.stdout

        deadline = time.monotonic() + 120
        while len(_prompts(fake_slack)) < REPS and time.monotonic() < deadline:
            time.sleep(0.5)
        assert terminated.is_set(), "the lock holder's backend was never terminated"
        second_holder = _wait_for_holder(admin, not_pid=first_holder)
        time.sleep(3)  # anything still on its way arrives now
        prompts = _prompts(fake_slack)
        assert set(prompts) == set(reps), f"{REPS - len(prompts)} reps never prompted"
        twice = {rep: n for rep, n in prompts.items() if n > 1}
        assert twice == {}, f"{len(twice)} reps prompted more than once"
        assert second_holder != first_holder
    finally:
        fake_slack.after_success("chat.postMessage", None)
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        admin.dispose()
