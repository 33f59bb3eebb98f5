"""Garbage collections in the quiet moments between Slack requests (gunicorn workers only).

Measured with bench/ack_bench.py: CPython's automatic collections ran on request threads in
the middle of bursts (full collections of 35 to 52 ms, second-generation ones of 14 to 17 ms,
each holding the interpreter lock while every request of the worker waited).
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections import Counter

from bot.afterack import Foreground

log = logging.getLogger(__name__)


class IdleCollector:
    """Garbage collections in the quiet moments between Slack requests.

    CPython collects its youngest generation after every 700 net allocations, the next after
    10 of those, and now and then everything, each on whichever thread is allocating at that
    moment: in a gunicorn worker, usually a request thread in the middle of a burst, holding
    the interpreter lock throughout while every request of the worker waits
    (bench/ack_bench.py: full collections of 35 to 52 ms, second-generation ones of 14 to
    17 ms). :meth:`start` changes that for the process (CPython 3.11 to 3.13; 3.14's
    incremental collector has no such generations, and is left alone):

    - the youngest generation is collected after ``YOUNG`` net allocations instead of 700:
      the objects of a request in flight then rarely outlive their request into the older
      generations, which is most of what those collections had to walk;
    - automatic full collections are off (their threshold out of reach);
    - a daemon thread, every ``poll`` seconds, collects what is due once ``foreground`` is
      quiet (see :class:`Foreground`): the second generation whenever the youngest was
      collected since (when the wait for quiet runs out, after its ``patience``, it collects
      anyway, as CPython would have by then), and a full collection after ``every`` of those
      (CPython's threshold), at a quiet moment only, unless none has run for
      ``FULL_AT_LEAST_EVERY`` seconds. Memory stays bounded as before: cyclic garbage is
      collected within seconds, whatever the traffic.
    """

    YOUNG = 10_000  # net allocations between collections of the youngest generation
    OFF = 1_000_000  # the full-collection threshold while this runs: out of reach
    FULL_AT_LEAST_EVERY = 60.0  # seconds: a due full collection waits for quiet this long

    def __init__(self, foreground: Foreground, *, poll: float = 0.5) -> None:
        self.foreground = foreground
        self.poll = poll
        self.every = 10  # CPython's default; start() reads the process's own
        self.collections: Counter[int] = Counter()  # by generation
        self._saved: tuple[int, int, int] | None = None
        self._last_full = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self) -> int | None:
        """The generation a collection now would be of, or None when nothing is due."""
        _, young_runs, second_runs = gc.get_count()
        if second_runs >= self.every:
            return 2
        return 1 if young_runs else None

    def collect_if_due(self) -> int | None:
        """Collect what is due, after waiting for quiet; the generation collected, if any."""
        if self.due() is None:
            return None
        quiet = self.foreground.wait_idle()
        generation = self.due()  # more may be due after the wait
        if generation == 2 and not quiet:
            if time.monotonic() - self._last_full < self.FULL_AT_LEAST_EVERY:
                generation = 1 if gc.get_count()[1] else None  # the full one when quiet
        if generation is None:
            return None
        gc.collect(generation)
        if generation == 2:
            self._last_full = time.monotonic()
        self.collections[generation] += 1
        return generation

    def start(self) -> bool:
        """Take over the older generations' collections; False where this does not apply."""
        if sys.version_info >= (3, 14):
            return False
        if self._thread is not None or gc.get_threshold()[2] >= self.OFF:
            raise RuntimeError("garbage collection is already taken over in this process")
        self._saved = gc.get_threshold()
        self.every = self._saved[2]
        gc.set_threshold(self.YOUNG, self._saved[1], self.OFF)
        self._thread = threading.Thread(target=self._run, name="idle-gc", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.collect_if_due()
            except Exception:  # never let the collector die quietly with collections off
                log.exception("idle garbage collection failed")
