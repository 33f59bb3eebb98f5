"""Work after the ack (Runtime.later) yields to the Slack requests being answered, within a
bounded wait, and a failure reaches the error handler instead of escaping."""

from __future__ import annotations

import threading
import time

import pytest

from bot.runtime import Foreground, Runtime
from tests.conftest import make_settings


@pytest.fixture
def settings(fake_slack, database_url):
    return make_settings(fake_slack.url, database_url)


def runtime(settings, session_factory, patience: float, quiet: float = 0.0) -> Runtime:
    from bot.runtime import make_client

    return Runtime(
        settings=settings,
        session_factory=session_factory,
        client=make_client(settings, timeout=3),
        foreground=Foreground(patience=patience, quiet=quiet),
    )


def test_later_waits_while_a_request_is_being_answered(settings, session_factory):
    rt = runtime(settings, session_factory, patience=5.0)
    ran = threading.Event()
    rt.foreground.enter()  # a Slack request is being answered
    try:
        rt.later(ran.set)
        assert not ran.wait(0.3)  # ... so the task waits
    finally:
        rt.foreground.leave()
    assert ran.wait(2)  # and runs as soon as no request is
    rt.drain_later()


def test_later_waits_at_most_its_patience(settings, session_factory):
    rt = runtime(settings, session_factory, patience=0.2)
    ran = threading.Event()
    rt.foreground.enter()  # requests keep coming: the work is delayed, never starved
    try:
        started = time.monotonic()
        rt.later(ran.set)
        assert ran.wait(2)
        assert 0.15 <= time.monotonic() - started < 1.5
    finally:
        rt.foreground.leave()
    rt.drain_later()


def test_later_waits_for_a_quiet_moment_after_the_last_answer(settings, session_factory):
    rt = runtime(settings, session_factory, patience=5.0, quiet=0.4)
    ran = threading.Event()
    rt.foreground.enter()
    rt.foreground.leave()  # a request was answered just now; more of its burst may follow
    started = time.monotonic()
    rt.later(ran.set)
    assert not ran.wait(0.2)
    assert ran.wait(2)
    assert 0.35 <= time.monotonic() - started < 1.5
    rt.drain_later()


def test_patience_counts_from_when_the_work_was_queued(settings, session_factory):
    """Under a steady stream of requests, work that waited its patience in the queue
    starts at once: the delay does not add up task after task."""
    from concurrent.futures import ThreadPoolExecutor

    rt = runtime(settings, session_factory, patience=0.3)
    rt.later_executor = ThreadPoolExecutor(max_workers=1)  # one thread: tasks queue
    starts: list[float] = []
    rt.foreground.enter()  # requests keep coming for the whole test
    try:
        queued = time.monotonic()
        futures = [rt.later(lambda: starts.append(time.monotonic())) for _ in range(3)]
        for future in futures:
            future.result(timeout=3)
    finally:
        rt.foreground.leave()
    rt.drain_later()
    # All three were queued together: each waits out the same 0.3 s, not 0.3 s after the last.
    assert all(0.25 <= start - queued < 0.6 for start in starts), [s - queued for s in starts]


def test_opening_a_modal_does_not_queue_behind_posting_work(settings, session_factory):
    """A modal's trigger_id expires 3 s after the click: while every after-the-ack thread is
    busy (posts paced at SLACK_POST_RATE, say), a modal still opens at once."""
    from bot.runtime import LATER_WORKERS

    rt = runtime(settings, session_factory, patience=0.1)
    release = threading.Event()
    busy = [rt.later(release.wait, 5) for _ in range(LATER_WORKERS + 3)]
    opened = threading.Event()
    try:
        rt.later(opened.set, opens_modal=True)
        assert opened.wait(1.0)
        assert not any(f.done() for f in busy)  # the posting work is still going
    finally:
        release.set()
    rt.drain_later()
    assert all(f.done() for f in busy)


def test_when_modals_fall_behind_the_next_one_opens_before_the_ack(
    settings, session_factory, monkeypatch
):
    """Under more load than the modal threads keep up with, a modal is opened on the
    request's own thread (its answer to Slack waits) rather than queued to open too late."""
    import bot.runtime as runtime_mod

    monkeypatch.setattr(runtime_mod, "MODAL_BACKLOG_COUNT", 3)
    rt = runtime(settings, session_factory, patience=5.0)
    rt.foreground.enter()  # a request being answered: queued modals wait (up to 5 s here)
    try:
        here = threading.get_ident()
        ran_on: list[int] = []
        queued = [  # the modal threads take theirs, and 3 wait
            rt.later(lambda: ran_on.append(1), opens_modal=True)
            for _ in range(runtime_mod.MODAL_WORKERS + 3)
        ]
        assert not any(f.done() for f in queued)
        rt.later(lambda: ran_on.append(threading.get_ident()), opens_modal=True)
        assert ran_on == [here]  # the next ran at once, on this thread
    finally:
        rt.foreground.leave()
    rt.drain_later()
    assert len(ran_on) == runtime_mod.MODAL_WORKERS + 4


def test_a_failure_after_the_ack_goes_to_on_error_and_is_logged(settings, session_factory, caplog):
    rt = runtime(settings, session_factory, patience=0.1)
    seen: list[Exception] = []

    def broken(n: int) -> None:
        raise RuntimeError(f"boom {n}")

    rt.later(broken, 7, on_error=seen.append).result(timeout=2)  # never raises here
    rt.drain_later()
    assert [str(e) for e in seen] == ["boom 7"]
    assert "work after the ack failed" in caplog.text
