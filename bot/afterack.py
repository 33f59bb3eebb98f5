"""Work after the ack: what a listener hands over once Slack has its answer.

Slack wants each request answered within 3 seconds, and a trigger_id (to open a modal) lives
3 seconds too. A listener validates, stores what must not be lost, acks, and hands the rest
to :class:`AfterAck`: opening a modal, reading Slack, processing an event from the inbox.
Nothing here posts to Slack: messages go through the outbox (bot.delivery.outbox).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor

log = logging.getLogger(__name__)

LATER_WORKERS = 4  # threads for work after the ack, per process
MODAL_WORKERS = 2  # and for opening the modals people are waiting for
# When a modal queued this many seconds ago is still waiting for those threads (twice what
# they wait for a burst to be answered), or this many are, the next one is opened before its
# ack instead: the process is falling behind.
MODAL_BACKLOG = 0.5
MODAL_BACKLOG_COUNT = 32


class Foreground:
    """The Slack requests this process is answering now, so work that can wait yields to them.

    Slack wants each request answered within 3 seconds and a person is watching a modal
    close. What a listener does after its ack (opening a modal, processing an event, sending
    what it queued) goes to :meth:`AfterAck.later`, whose threads start a task once
    no request has been answered here for ``quiet`` seconds (a burst of 50 submissions
    arrives over a few milliseconds, with gaps between them), or ``patience`` seconds after
    the task was queued at the latest: a burst is acknowledged first and its follow-up work
    runs right after, instead of the acks queueing behind rounds of database and Slack calls
    for the one interpreter lock. ``patience`` is counted from the queueing, so a steady
    stream of requests delays that work by at most that much and never starves it (a
    modal's trigger_id lives 3 seconds).
    """

    def __init__(self, patience: float = 0.25, quiet: float = 0.03) -> None:
        self.patience = patience
        self.quiet = quiet
        self._answering = 0
        self._last_answer = 0.0  # time.monotonic() when the last request was answered
        self._idle = threading.Condition()

    def enter(self) -> None:
        with self._idle:
            self._answering += 1

    def leave(self) -> None:
        with self._idle:
            self._answering = max(0, self._answering - 1)
            self._last_answer = time.monotonic()
            if self._answering == 0:
                self._idle.notify_all()

    @property
    def answering(self) -> int:
        return self._answering

    def wait_idle(self, queued_at: float | None = None) -> bool:
        """Return once no request has been answered for ``quiet`` seconds (True), or
        ``patience`` seconds after ``queued_at`` (a time.monotonic(); default now; False),
        whichever is first."""
        deadline = (time.monotonic() if queued_at is None else queued_at) + self.patience
        with self._idle:
            while True:
                now = time.monotonic()
                if self._answering == 0 and now >= self._last_answer + self.quiet:
                    return True
                if now >= deadline:
                    return False
                if self._answering == 0:
                    quiet_at = self._last_answer + self.quiet
                    self._idle.wait(min(quiet_at, deadline) - now)
                else:
                    self._idle.wait(deadline - now)


class AfterAck:
    """This process's threads for work after the ack (see :meth:`later`)."""

    def __init__(
        self,
        *,
        foreground: Foreground | None = None,
        executor: Executor | None = None,
    ) -> None:
        """``executor`` replaces both thread pools (the tests pass one that tracks work)."""
        self.foreground = foreground or Foreground()
        self._lock = threading.Lock()
        self._later_executor: Executor | None = executor
        self._modal_executor: Executor | None = executor
        self._modals_waiting: dict[object, float] = {}  # opens_modal work not started

    def later(
        self,
        fn: Callable[..., object],
        /,
        *args,
        on_error: Callable[[Exception], object] | None = None,
        opens_modal: bool = False,
        **kwargs,
    ) -> Future:
        """Run ``fn(*args, **kwargs)`` on this process's after-the-ack threads, once no Slack
        request is being answered here (see :class:`Foreground`). A failure is logged and
        handed to ``on_error`` (a listener's: tell the person); it never escapes.

        ``opens_modal``: a person is waiting for a modal, whose trigger_id expires 3 seconds
        after their click or command. Such work has threads of its own, so it never queues
        behind other work after the ack (a burst of answers, each processed with a read
        of Slack, would hold every after-the-ack thread for seconds). When one queued
        MODAL_BACKLOG seconds ago is still waiting (or MODAL_BACKLOG_COUNT are), it runs
        here and now, on the request's thread, before the answer leaves: under more load
        than the process can keep up with, Slack's requests are answered more slowly
        instead of modals opening too late.

        In memory: a process killed before the task ran loses it, so only work that is redone
        from the database (an event from the inbox, the outbox) or that the person can
        simply repeat (opening a modal) goes here.
        """
        queued_at = time.monotonic()

        def work() -> None:
            try:
                fn(*args, **kwargs)
            except Exception as err:
                log.error("work after the ack failed (%s)", _name(fn), exc_info=err)
                if on_error is not None:
                    try:
                        on_error(err)
                    except Exception:
                        log.exception("reporting a failure after the ack failed")

        if not opens_modal:

            def run() -> None:
                self.foreground.wait_idle(queued_at)
                work()

            with self._lock:
                if self._later_executor is None:
                    self._later_executor = ThreadPoolExecutor(
                        max_workers=LATER_WORKERS, thread_name_prefix="after-ack"
                    )
                return self._later_executor.submit(run)

        token = object()
        with self._lock:
            waiting = self._modals_waiting
            backlogged = len(waiting) >= MODAL_BACKLOG_COUNT or (
                bool(waiting) and queued_at - min(waiting.values()) > MODAL_BACKLOG
            )
            if not backlogged:
                waiting[token] = queued_at
                if self._modal_executor is None:
                    self._modal_executor = ThreadPoolExecutor(
                        max_workers=MODAL_WORKERS, thread_name_prefix="open-modal"
                    )
                executor = self._modal_executor
        if backlogged:
            work()
            done: Future = Future()
            done.set_result(None)
            return done

        def run_modal() -> None:
            with self._lock:
                self._modals_waiting.pop(token, None)
            self.foreground.wait_idle(queued_at)
            work()

        return executor.submit(run_modal)

    def drain(self) -> None:
        """Finish the work queued with :meth:`later` (a graceful shutdown)."""
        with self._lock:
            executors = {self._modal_executor, self._later_executor} - {None}
            self._later_executor = self._modal_executor = None
        for executor in executors:
            executor.shutdown(wait=True)  # type: ignore[union-attr]


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
