"""How `closeloop run` sizes its gunicorn workers, and the full garbage collections each
worker keeps out of the way of Slack's requests (bot.wsgi, bot.runtime.IdleCollector)."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from bot.afterack import LATER_WORKERS, MODAL_WORKERS, Foreground
from bot.config import ConfigError, web_concurrency, web_threads
from bot.gc_tuning import IdleCollector
from bot.wsgi import db_pool_size


def test_default_workers_are_two_a_cpu_at_most_four(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "")  # blank: the default
    monkeypatch.delenv("WEB_THREADS", raising=False)
    for cpus, workers in ((1, 2), (2, 4), (16, 4)):
        monkeypatch.setattr("os.sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert web_concurrency() == workers
    assert web_threads() == 4
    monkeypatch.delattr("os.sched_getaffinity")  # macOS has no affinity: the CPU count
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert web_concurrency() == 2


def test_operators_settings_win(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "7")
    monkeypatch.setenv("WEB_THREADS", " 12 ")
    assert (web_concurrency(), web_threads()) == (7, 12)


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "many", "257", "²"])
def test_a_bad_worker_count_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv("WEB_CONCURRENCY", value)
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
        web_concurrency()


def test_the_pool_has_a_connection_for_every_thread_that_can_hold_one():
    # request threads + work after the ack + opening modals + the tick and the scheduler lock
    assert db_pool_size(4) == 4 + LATER_WORKERS + MODAL_WORKERS + 2
    assert db_pool_size(8) - db_pool_size(4) == 4


def _full_collections() -> tuple[list[str], object]:
    seen: list[str] = []

    def record(phase, info):
        if phase == "start" and info["generation"] == 2:
            seen.append(threading.current_thread().name)

    gc.callbacks.append(record)
    return seen, record


def _make_cyclic_garbage(until) -> None:
    """Reference cycles (freed only by the collector) until ``until()`` or 5 million."""
    for _ in range(5_000_000):
        cycle: list = []
        cycle.append(cycle)
        if until():
            return
    raise AssertionError("no generation-1 collections happened")


def test_full_collections_wait_for_the_collector_not_for_a_request_thread():
    collector = IdleCollector(Foreground(patience=5, quiet=0.01), poll=3600)  # no polling
    before = gc.get_threshold()
    seen, record = _full_collections()
    try:
        collector.start()
        assert gc.get_threshold() == (IdleCollector.YOUNG, before[1], IdleCollector.OFF)
        # More second-generation collections than CPython runs a full one after.
        _make_cyclic_garbage(until=lambda: gc.get_count()[2] > collector.every)
        assert seen == [] and collector.due() == 2
        assert collector.collect_if_due() == 2
        assert seen == [threading.current_thread().name]
        assert collector.due() is None and collector.collect_if_due() is None  # nothing due
        assert seen == [threading.current_thread().name]
    finally:
        gc.callbacks.remove(record)
        collector.stop()
    assert gc.get_threshold() == before  # CPython's own schedule back


def test_the_second_generation_is_collected_whenever_the_youngest_was():
    collector = IdleCollector(Foreground(patience=5, quiet=0.01), poll=3600)
    try:
        collector.start()
        gc.collect()
        _make_cyclic_garbage(until=lambda: gc.get_count()[1] >= 1)
        assert collector.due() == 1
        assert collector.collect_if_due() == 1
        assert gc.get_count()[1] == 0 and gc.get_count()[2] == 1
        assert collector.collections == {1: 1}
    finally:
        collector.stop()


def test_a_due_collection_waits_until_no_request_is_being_answered():
    foreground = Foreground(patience=60, quiet=0.02)
    collector = IdleCollector(foreground, poll=0.01)
    seen, record = _full_collections()
    foreground.enter()  # a Slack request is being answered
    try:
        collector.start()
        _make_cyclic_garbage(until=lambda: collector.due() == 2)
        time.sleep(0.3)
        assert seen == [] and not collector.collections
        answered = time.monotonic()
        foreground.leave()
        deadline = time.monotonic() + 5
        while not collector.collections[2] and time.monotonic() < deadline:
            time.sleep(0.005)
        assert seen == ["idle-gc"]
        assert time.monotonic() - answered < 2  # soon after the quiet began
    finally:
        gc.callbacks.remove(record)
        collector.stop()


def test_without_a_quiet_moment_a_full_collection_waits_its_turn():
    foreground = Foreground(patience=0.05, quiet=0.02)
    collector = IdleCollector(foreground, poll=3600)
    seen, record = _full_collections()
    foreground.enter()  # requests never stop
    try:
        collector.start()
        _make_cyclic_garbage(until=lambda: collector.due() == 2 and gc.get_count()[1] > 0)
        # The wait for quiet runs out: only the cheap collection, the full one stays due.
        assert collector.collect_if_due() == 1
        assert seen == [] and collector.due() == 2
        # Until none has run for FULL_AT_LEAST_EVERY seconds: then it runs regardless.
        collector._last_full -= IdleCollector.FULL_AT_LEAST_EVERY
        assert collector.collect_if_due() == 2
        assert seen == [threading.current_thread().name]
    finally:
        foreground.leave()
        gc.callbacks.remove(record)
        collector.stop()


def test_only_one_collector_takes_over_a_process():
    first, second = IdleCollector(Foreground()), IdleCollector(Foreground())
    before = gc.get_threshold()
    try:
        assert first.start() is True
        with pytest.raises(RuntimeError, match="already"):
            second.start()
        with pytest.raises(RuntimeError, match="already"):
            first.start()
    finally:
        second.stop()
        first.stop()
    assert gc.get_threshold() == before
