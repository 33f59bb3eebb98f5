"""SIGKILL in the middle of a 2,000-rep fan-out, then a restart: every rep prompted once.

Real processes (``closeloop prompt --now``) against the fake Slack. The first one is killed
by the fake Slack itself at the worst moment: right after Slack stored the 1,000th DM and
before its answer was written, so the dying process cannot know it went out, and other DMs
are in flight on its sender threads. Its claims are taken over once their lease has run out
(OUTBOX_LEASE_SECONDS, short here), never before: the restart looks for each in Slack first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

from sqlalchemy import select

from bot.db import session_scope
from bot.delivery.outbox import MARK
from bot.models import OutboxMessage, Prompt
from bot.services import outbox as outbox_svc
from tests.harness import seed_sales_roster

REPS = 2000
KILL_AT = 1000
LEASE = 3  # seconds


def _reps() -> list[str]:
    return [f"UREP{n:05d}" for n in range(REPS)]


def _wait_until_the_role_is_free(session_factory, timeout: float = 30) -> None:
    """PostgreSQL drops a dead process's advisory lock when it notices the connection closed."""
    from bot.leader import make_lock

    lock = make_lock(session_factory.kw["bind"])
    deadline = time.monotonic() + timeout
    while not lock.try_acquire():
        assert time.monotonic() < deadline, "the killed process's scheduler lock was never freed"
        time.sleep(0.1)
    lock.release()


def _prompts_by_rep(fake_slack) -> Counter:
    """Prompt DMs Slack stored, per rep (successful calls carrying the outbox marker)."""
    counts: Counter = Counter()
    for call in fake_slack.calls_to("chat.postMessage"):
        metadata = call.params.get("metadata") or {}
        if metadata.get("event_type") == MARK:
            counts[call.params["channel"]] += 1
    return counts


def test_sigkill_mid_fan_out_then_restart_prompts_every_rep_exactly_once(
    cli_env, fake_slack, session_factory
):
    seed_sales_roster(fake_slack, session_factory, _reps())
    env = {
        **cli_env,
        "SLACK_POST_RATE": "1000",
        "OUTBOX_WORKERS": "8",
        "OUTBOX_LEASE_SECONDS": str(LEASE),
        "LOG_LEVEL": "WARNING",
    }
    stored = 0
    lock = threading.Lock()
    victim: list[subprocess.Popen] = []

    def kill_at_the_worst_moment(_body) -> None:
        nonlocal stored
        with lock:
            stored += 1
            if stored == KILL_AT:
                os.kill(victim[0].pid, signal.SIGKILL)

    fake_slack.after_success("chat.postMessage", kill_at_the_worst_moment)
    first = subprocess.Popen(
        [sys.executable, "-m", "bot", "prompt", "--now"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim.append(first)
    first.communicate(timeout=300)
    assert first.returncode == -signal.SIGKILL
    fake_slack.after_success("chat.postMessage", None)

    with session_scope(session_factory) as session:
        states = outbox_svc.counts(session)
        claimed = session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.state == "sending")
        ).all()
    before = _prompts_by_rep(fake_slack)
    assert KILL_AT <= sum(before.values()) < REPS  # killed in the middle of the fan-out
    assert claimed, f"nothing was in flight when the process died: {states}"
    assert sum(states.values()) == REPS  # all queued before the kill: one row per rep

    _wait_until_the_role_is_free(session_factory)
    time.sleep(LEASE + 0.5)  # the dead process's claims lapse
    second = subprocess.run(
        [sys.executable, "-m", "bot", "prompt", "--now"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-2000:]

    prompted = _prompts_by_rep(fake_slack)
    with session_scope(session_factory) as session:
        after = outbox_svc.counts(session)
    assert set(prompted) == set(_reps()), (after, second.stdout[-1500:], second.stderr[-3000:])
    assert max(prompted.values()) == 1  # nobody twice
    assert len(fake_slack.calls_to("conversations.history")) >= len(claimed)  # looked first
    with session_scope(session_factory) as session:
        assert outbox_svc.counts(session) == {"sent": REPS}
        rows = session.execute(select(Prompt.user_id, Prompt.status, Prompt.dm_ts)).all()
    assert len(rows) == REPS and {status for _, status, _ in rows} == {"sent"}
    sent_ts = {
        call.params["channel"]: call.response["ts"]
        for call in fake_slack.calls_to("chat.postMessage")
        if (call.params.get("metadata") or {}).get("event_type") == MARK
    }
    assert all(dm_ts == sent_ts[user_id] for user_id, _, dm_ts in rows)
