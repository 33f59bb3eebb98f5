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


def runtime(settings, session_factory, patience: float) -> Runtime:
    from bot.runtime import make_client

    return Runtime(
        settings=settings,
        session_factory=session_factory,
        client=make_client(settings, timeout=3),
        foreground=Foreground(patience=patience),
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


def test_a_failure_after_the_ack_goes_to_on_error_and_is_logged(settings, session_factory, caplog):
    rt = runtime(settings, session_factory, patience=0.1)
    seen: list[Exception] = []

    def broken(n: int) -> None:
        raise RuntimeError(f"boom {n}")

    rt.later(broken, 7, on_error=seen.append).result(timeout=2)  # never raises here
    rt.drain_later()
    assert [str(e) for e in seen] == ["boom 7"]
    assert "work after the ack failed" in caplog.text
