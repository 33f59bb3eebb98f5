"""SIGTERM stops `closeloop run` cleanly: exit 0 within seconds, no traceback, no ERROR line,
and the outbox's claims are given back (nothing is lost), whether Slack comes over HTTP
(gunicorn workers, one of which runs the scheduler) or over Socket Mode."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.models import Digest, OutboxMessage, utcnow
from bot.services import outgoing
from tests.conftest import installed_long_ago
from tests.fakesocket import FakeSocketMode

APP_TOKEN = "xapp-1-A0001-1-shutdowntest"
NOTICES = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(check, timeout: float, proc) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, "the bot stopped"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _stop(proc, log) -> tuple[int, str, float]:
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    proc.wait(timeout=30)
    return proc.returncode, log.read_text(), time.monotonic() - started


def _assert_clean(out: str) -> None:
    assert "Traceback" not in out, out
    assert not [line for line in out.splitlines() if " ERROR " in line or "ERROR:" in line], out


@pytest.fixture
def socket_mode() -> Iterator[FakeSocketMode]:
    with FakeSocketMode() as server:
        yield server


def _queue_notices(session_factory) -> None:
    """Messages waiting in the outbox, as a fan-out leaves them (and last month's digest
    already posted: the test is not about it)."""
    now = utcnow() - timedelta(seconds=5)
    last_month = (now.replace(day=1) - timedelta(days=1)).date().replace(day=1)
    with session_scope(session_factory) as session:
        session.add(Digest(month=last_month, channel="CDIGEST", ts="1.000001", chart_file_id="F0"))
        for n in range(NOTICES):
            outgoing.notice(session, user_id="UANA", text=f"notice {n}", now=now, key=f"n{n}")


def _slow_posts(fake_slack) -> threading.Event:
    """chat.postMessage takes 0.3 s (Slack under load); the event is set at the first."""
    post, first = fake_slack._chat_post_message, threading.Event()

    def slowly(params):
        first.set()
        time.sleep(0.3)
        return post(params)

    fake_slack.register("chat.postMessage", slowly)
    return first


@pytest.mark.parametrize("mode", ["http", "socket"])
def test_sigterm_while_sending_stops_cleanly_and_loses_nothing(
    cli_env, fake_slack, socket_mode, session_factory, tmp_path, mode
):
    """`closeloop run` (gunicorn workers in HTTP mode; one process in Socket Mode) sending a
    fan-out when SIGTERM comes: it exits 0 within seconds, logs no traceback and no ERROR;
    every message is either recorded as sent (once, matching what Slack got) or back in the
    outbox, unclaimed, for the next start."""
    installed_long_ago(session_factory)
    _queue_notices(session_factory)
    first_post = _slow_posts(fake_slack)
    port = _free_port()
    env = {**cli_env, "PORT": str(port), "CLOSELOOP_SCHEDULER_POLL": "0.2"}
    if mode == "http":
        env["WEB_CONCURRENCY"] = "2"
    else:
        fake_slack.app_token = APP_TOKEN
        fake_slack.socket_url = socket_mode.issue_url
        env.update(SLACK_APP_TOKEN=APP_TOKEN, DEALS_WEBHOOK_SECRET="whsec-test")
        del env["SLACK_SIGNING_SECRET"]
    log = tmp_path / "closeloop.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until(lambda: _healthy(port), 30, proc)
        _wait_until(first_post.is_set, 30, proc)
        time.sleep(0.5)  # sends in flight
    finally:
        code, out, took = _stop(proc, log)
    assert code == 0, out
    assert took < 10, out
    _assert_clean(out)

    calls = fake_slack.calls_to("chat.postMessage")
    posted = [c.params["text"] for c in calls if c.params["text"].startswith("notice ")]
    assert len(posted) == len(set(posted))  # none twice
    with session_scope(session_factory) as session:
        rows = (
            session.execute(select(OutboxMessage).where(OutboxMessage.text.startswith("notice ")))
            .scalars()
            .all()
        )
    assert len(rows) == NOTICES
    sent = sorted(r.text for r in rows if r.state == "sent")
    assert sent == sorted(posted)  # what Slack got is recorded, and only that
    waiting = [r for r in rows if r.state != "sent"]
    assert waiting, "SIGTERM came after the fan-out ended"
    assert {(r.state, r.claimed_by) for r in waiting} == {("pending", None)}
