"""Work after the ack (AfterAck.later) yields to the Slack requests being answered, within a
bounded wait, and a failure reaches the error handler instead of escaping."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Executor

from bot import afterack
from bot.afterack import AfterAck, Foreground


def after_ack(patience: float, quiet: float = 0.0, executor: Executor | None = None) -> AfterAck:
    return AfterAck(foreground=Foreground(patience=patience, quiet=quiet), executor=executor)


def test_later_waits_while_a_request_is_being_answered():
    work = after_ack(patience=5.0)
    ran = threading.Event()
    work.foreground.enter()  # a Slack request is being answered
    try:
        work.later(ran.set)
        assert not ran.wait(0.3)  # ... so the task waits
    finally:
        work.foreground.leave()
    assert ran.wait(2)  # and runs as soon as no request is
    work.drain()


def test_later_waits_at_most_its_patience():
    work = after_ack(patience=0.2)
    ran = threading.Event()
    work.foreground.enter()  # requests keep coming: the work is delayed, never starved
    try:
        started = time.monotonic()
        work.later(ran.set)
        assert ran.wait(2)
        assert 0.15 <= time.monotonic() - started < 1.5
    finally:
        work.foreground.leave()
    work.drain()


def test_later_waits_for_a_quiet_moment_after_the_last_answer():
    work = after_ack(patience=5.0, quiet=0.4)
    ran = threading.Event()
    work.foreground.enter()
    work.foreground.leave()  # a request was answered just now; more of its burst may follow
    started = time.monotonic()
    work.later(ran.set)
    assert not ran.wait(0.2)
    assert ran.wait(2)
    assert 0.35 <= time.monotonic() - started < 1.5
    work.drain()


def test_patience_counts_from_when_the_work_was_queued():
    """Under a steady stream of requests, work that waited its patience in the queue
    starts at once: the delay does not add up task after task."""
    from concurrent.futures import ThreadPoolExecutor

    work = after_ack(patience=0.3, executor=ThreadPoolExecutor(max_workers=1))  # tasks queue
    starts: list[float] = []
    work.foreground.enter()  # requests keep coming for the whole test
    try:
        queued = time.monotonic()
        futures = [work.later(lambda: starts.append(time.monotonic())) for _ in range(3)]
        for future in futures:
            future.result(timeout=3)
    finally:
        work.foreground.leave()
    work.drain()
    # All three were queued together: each waits out the same 0.3 s, not 0.3 s after the last.
    assert all(0.25 <= start - queued < 0.6 for start in starts), [s - queued for s in starts]


def test_opening_a_modal_does_not_queue_behind_posting_work():
    """A modal's trigger_id expires 3 s after the click: while every after-the-ack thread is
    busy (posts paced at SLACK_POST_RATE, say), a modal still opens at once."""
    work = after_ack(patience=0.1)
    release = threading.Event()
    busy = [work.later(release.wait, 5) for _ in range(afterack.LATER_WORKERS + 3)]
    opened = threading.Event()
    try:
        work.later(opened.set, opens_modal=True)
        assert opened.wait(1.0)
        assert not any(f.done() for f in busy)  # the posting work is still going
    finally:
        release.set()
    work.drain()
    assert all(f.done() for f in busy)


def test_when_modals_fall_behind_the_next_one_opens_before_the_ack(monkeypatch):
    """Under more load than the modal threads keep up with, a modal is opened on the
    request's own thread (its answer to Slack waits) rather than queued to open too late."""
    monkeypatch.setattr(afterack, "MODAL_BACKLOG_COUNT", 3)
    work = after_ack(patience=5.0)
    work.foreground.enter()  # a request being answered: queued modals wait (up to 5 s here)
    try:
        here = threading.get_ident()
        ran_on: list[int] = []
        queued = [  # the modal threads take theirs, and 3 wait
            work.later(lambda: ran_on.append(1), opens_modal=True)
            for _ in range(afterack.MODAL_WORKERS + 3)
        ]
        assert not any(f.done() for f in queued)
        work.later(lambda: ran_on.append(threading.get_ident()), opens_modal=True)
        assert ran_on == [here]  # the next ran at once, on this thread
    finally:
        work.foreground.leave()
    work.drain()
    assert len(ran_on) == afterack.MODAL_WORKERS + 4


def test_a_failure_after_the_ack_goes_to_on_error_and_is_logged(caplog):
    work = after_ack(patience=0.1)
    seen: list[Exception] = []

    def broken(n: int) -> None:
        raise RuntimeError(f"boom {n}")

    work.later(broken, 7, on_error=seen.append).result(timeout=2)  # never raises here
    work.drain()
    assert [str(e) for e in seen] == ["boom 7"]
    assert "work after the ack failed" in caplog.text
