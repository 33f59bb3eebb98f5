"""Events API events are processed at least once and, by event_id, once in effect (the inbox,
bot.event_inbox): a delivery abandoned by a dying process is replayed by the tick, a retry
that reaches another worker while the first is still on it is ignored, an event that keeps
failing stops after a bounded number of attempts, and finished events are forgotten after a
week. Driven through the running app (signed HTTP) with several workers on one database."""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from bot.app import SORRY
from bot.db import session_scope
from bot.models import Digest, FeedbackAnswer, InboundEvent
from bot.services import feedback as feedback_svc
from bot.services import inbox as inbox_svc
from tests.harness import Harness, events_of, tick
from tests.test_loop_scenario import FRI_1500_UTC, all_text, channel_posts, dms_to

BULLETS = "- ROI opener\n- Security deck\n- Budgets move to Q3"


@pytest.fixture
def h(harness, engine):
    """The harness with October's digest recorded as posted (so a tick renders no chart)."""
    with engine.begin() as conn:
        conn.execute(
            Digest.__table__.insert().values(
                month=date(2026, 10, 1), channel="CDIGEST", ts="1.000001", chart_file_id="F0"
            )
        )
    return harness


@contextmanager
def frozen_before_processing(worker: Harness):
    """``worker`` stores and claims the event it is given, then freezes before its listener
    does anything (as a process SIGKILLed at that moment: nothing after the claim happens
    while the test looks). The delivery is sent from a thread; yields once it is stuck."""
    real = feedback_svc.open_prompt_for
    stuck, released = threading.Event(), threading.Event()

    def open_prompt_for(session, **kwargs):  # the listener's first step
        if not stuck.is_set():  # the doomed worker's processing: the first call
            stuck.set()
            released.wait(30)
            raise RuntimeError("this process was killed")  # never reaches the real work
        return real(session, **kwargs)

    feedback_svc.open_prompt_for = open_prompt_for
    try:
        thread = threading.Thread(
            target=lambda: worker.dm("UANA", BULLETS, event_id="EvCRASH", settle=False),
            daemon=True,
        )
        thread.start()
        assert stuck.wait(5)
        yield
    finally:
        released.set()
        thread.join(10)
        worker.settle()
        feedback_svc.open_prompt_for = real


@contextmanager
def another_worker(h: Harness):
    """A second worker (gunicorn process) on the same database and Slack."""
    worker = Harness(
        settings=h.settings, slack=h.slack, session_factory=h.rt.session_factory, clock=h.clock
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def prompt_ana(h: Harness) -> None:
    h.clock.set(FRI_1500_UTC)  # 16:00 in Berlin: Ana's prompt goes out
    tick(h.rt)
    assert len(dms_to(h.slack, "UANA")) == 1


def event_row(h: Harness, event_id: str) -> InboundEvent:
    with session_scope(h.rt.session_factory) as s:
        row = s.get(InboundEvent, event_id)
        assert row is not None
        return row


def answers(h: Harness) -> int:
    with session_scope(h.rt.session_factory) as s:
        return len(s.scalars(select(FeedbackAnswer.id)).all())


def edits(h: Harness) -> int:
    with session_scope(h.rt.session_factory) as s:
        return sum(s.scalars(select(FeedbackAnswer.edit_count)))


def confirmations(h: Harness) -> list:
    return [c for c in dms_to(h.slack, "UANA") if "sent to marketing" in all_text(c.params)]


def assert_answered_once(h: Harness, event_id: str) -> None:
    assert answers(h) == 1
    assert len(channel_posts(h.slack, threaded=False)) == 1
    assert len(confirmations(h)) == 1
    # Processed a second time, the same bullets would be stored again as an edit.
    assert edits(h) == 0
    assert not [c for c in dms_to(h.slack, "UANA") if "Updated your answer" in all_text(c.params)]
    row = event_row(h, event_id)
    assert (row.state, row.payload, row.claimed_by) == ("done", None, None)


# --- (1) a process dies with the event: no Slack retry, the tick replays it ----------------


@pytest.mark.parametrize("replayer", ["web worker", "scheduler-only process"])
def test_event_abandoned_by_a_dead_process_is_replayed_by_the_tick_once(h, replayer):
    prompt_ana(h)
    with another_worker(h) as doomed, frozen_before_processing(doomed):
        _replayed_once(h, replayer)


def _replayed_once(h: Harness, replayer: str) -> None:
    assert answers(h) == 0  # claimed, never processed
    row = event_row(h, "EvCRASH")
    assert (row.state, row.attempts) == ("processing", 1)
    assert row.payload["event"]["text"] == BULLETS  # stored before anything else

    # Its lease is still running: the tick leaves it to the process that claimed it.
    h.clock.advance(minutes=4)
    tick(h.rt)
    h.settle()
    assert answers(h) == 0

    # The lease ran out: the tick replays the stored payload through the app.
    h.clock.advance(minutes=1, seconds=1)
    if replayer == "web worker":
        tick(h.rt)
        h.settle()
    else:  # `closeloop scheduler`: no Slack listeners of its own, it builds an app to replay
        tick(h.another_process())
        h.settle()
    assert_answered_once(h, "EvCRASH")
    assert event_row(h, "EvCRASH").attempts == 2

    # Neither a late Slack retry nor later ticks process it again.
    assert h.dm("UANA", BULLETS, event_id="EvCRASH", retry_num=1).status == 200
    h.clock.advance(minutes=10)
    tick(h.rt)
    h.settle()
    assert_answered_once(h, "EvCRASH")


# --- (2) Slack's retry reaches another worker while the first is still processing ----------


def test_retry_reaching_another_worker_mid_processing_is_processed_once(h, monkeypatch):
    prompt_ana(h)
    busy, go_on = threading.Event(), threading.Event()
    real = feedback_svc.open_prompt_for

    def slow(session, **kwargs):  # worker A's processing of the event hangs
        if not busy.is_set():
            busy.set()
            assert go_on.wait(10)
        return real(session, **kwargs)

    monkeypatch.setattr(feedback_svc, "open_prompt_for", slow)
    with another_worker(h) as b:
        first = threading.Thread(
            target=lambda: h.dm("UANA", BULLETS, event_id="EvTWICE", settle=False)
        )
        first.start()
        assert busy.wait(5)  # A answered 200 and is processing it
        # Slack timed out waiting (as it would for a slow worker) and retries: B gets it.
        assert b.dm("UANA", BULLETS, event_id="EvTWICE", retry_num=1).status == 200
        assert b.dm("UANA", BULLETS, event_id="EvTWICE", retry_num=2).status == 200
        assert event_row(h, "EvTWICE").state == "processing"
        go_on.set()
        first.join(10)
        h.settle()
        assert_answered_once(h, "EvTWICE")
        # A retry after A finished, to B and to A, is ignored too.
        assert b.dm("UANA", BULLETS, event_id="EvTWICE", retry_num=3).status == 200
        assert h.dm("UANA", BULLETS, event_id="EvTWICE", retry_num=3).status == 200
    assert_answered_once(h, "EvTWICE")
    assert event_row(h, "EvTWICE").attempts == 1


def test_the_same_event_delivered_to_two_workers_at_once_is_processed_once(h):
    prompt_ana(h)
    with another_worker(h) as b:
        start = threading.Barrier(2)

        def deliver(worker: Harness) -> None:
            start.wait()
            worker.dm("UANA", BULLETS, event_id="EvRACE", settle=False)

        threads = [threading.Thread(target=deliver, args=(w,)) for w in (h, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        h.settle()
        b.settle()
    assert_answered_once(h, "EvRACE")
    assert event_row(h, "EvRACE").attempts == 1


# --- (3) an event that keeps failing stops after a bounded number of attempts --------------


def test_event_that_keeps_failing_is_given_up_after_the_last_attempt(h, monkeypatch, caplog):
    prompt_ana(h)
    calls = []

    def broken(session, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("the answer cannot be stored")

    monkeypatch.setattr(feedback_svc, "open_prompt_for", broken)
    assert h.dm("UANA", BULLETS, event_id="EvBAD").status == 200
    row = event_row(h, "EvBAD")
    assert (row.state, row.attempts, row.claimed_by) == ("pending", 1, None)
    assert "cannot be stored" in row.last_error
    for retry in (1, 2, 3):  # Slack's three retries: each processes it again, and fails
        h.dm("UANA", BULLETS, event_id="EvBAD", retry_num=retry)
    assert len(calls) == 4
    assert event_row(h, "EvBAD").attempts == 4

    tick(h.rt)  # the tick waits for the backoff (8 minutes after the 4th attempt)
    h.settle()
    assert len(calls) == 4
    h.clock.advance(minutes=8, seconds=1)
    with caplog.at_level(logging.ERROR, logger="bot.event_inbox"):
        tick(h.rt)
        h.settle()
    assert len(calls) == 5
    row = event_row(h, "EvBAD")
    assert (row.state, row.attempts) == ("failed", 5)
    assert row.payload["event"]["text"] == BULLETS  # kept for a person to look at
    assert any("EvBAD" in r.getMessage() and "giving up" in r.getMessage() for r in caplog.records)

    for _ in range(3):  # nothing tries it again: not the tick, not a late retry
        h.clock.advance(hours=1)
        tick(h.rt)
        h.settle()
    h.dm("UANA", BULLETS, event_id="EvBAD", retry_num=3)
    assert len(calls) == 5
    # Ana was told once, when it first failed (not at every retry or replay).
    assert len([c for c in dms_to(h.slack, "UANA") if c.params.get("text") == SORRY]) == 1


def test_claim_abandoned_on_its_last_attempt_is_given_up_by_the_tick(h, caplog):
    """Five processes in a row die with the event: the fifth claim's lease runs out and the
    tick marks it failed (loudly) instead of replaying it a sixth time."""
    prompt_ana(h)
    envelope = {
        "type": "event_callback",
        "event_id": "EvDOOMED",
        "event": {"type": "message", "channel_type": "im", "user": "UANA", "text": BULLETS},
    }
    now = h.clock()
    with session_scope(h.rt.session_factory) as s:
        for attempt in range(1, inbox_svc.MAX_ATTEMPTS + 1):
            owner = f"dead-{attempt}"
            got = inbox_svc.claim(s, event_id="EvDOOMED", payload=envelope, owner=owner, now=now)
            assert got == attempt
            now += inbox_svc.LEASE + timedelta(seconds=1)
        assert inbox_svc.claim(s, event_id="EvDOOMED", payload=envelope, owner="x", now=now) is None
    h.clock.set(now)
    with caplog.at_level(logging.ERROR, logger="bot.event_inbox"):
        tick(h.rt)
        h.settle()
    row = event_row(h, "EvDOOMED")
    assert (row.state, row.attempts) == ("failed", 5)
    assert "abandoned" in row.last_error
    assert answers(h) == 0
    assert any("EvDOOMED" in r.getMessage() for r in caplog.records)


# --- an event no listener takes is done at once --------------------------------------------


def test_event_without_a_listener_is_done_and_never_replayed(h):
    reply = h.event(
        {"type": "member_joined_channel", "user": "UANA", "channel": "CMKTG"},
        event_id="EvIGNORED",
    )
    assert reply.status == 200  # not Bolt's 404: Slack would retry it, and count a failure
    assert event_row(h, "EvIGNORED").state == "done"
    h.clock.advance(hours=1)
    tick(h.rt)
    h.settle()
    assert event_row(h, "EvIGNORED").attempts == 1
    assert [c for c in h.slack.calls if c.method == "chat.postMessage"] == []


# --- (4) finished events are forgotten after a week ----------------------------------------


def test_tick_forgets_finished_events_after_a_week_and_keeps_unfinished_ones(h):
    now = h.clock()
    old, recent = now - timedelta(days=7, minutes=1), now - timedelta(days=6, hours=23)
    rows = {
        "EvOLDDONE": ("done", old, None),
        "EvOLDFAILED": ("failed", old, None),
        "EvRECENTDONE": ("done", recent, None),
        "EvRECENTFAILED": ("failed", recent, None),
        # claimed long ago and still under a (renewed) lease: not finished, not forgotten
        "EvOLDBUSY": ("processing", old, now + timedelta(minutes=3)),
    }
    with session_scope(h.rt.session_factory) as s:
        for event_id, (state, received, due) in rows.items():
            s.add(
                InboundEvent(
                    event_id=event_id,
                    state=state,
                    attempts=1,
                    received_at=received,
                    due_at=due,
                    claimed_by="p1" if state == "processing" else None,
                    payload={"event_id": event_id} if state != "done" else None,
                )
            )
    tick(h.rt)
    h.settle()
    with session_scope(h.rt.session_factory) as s:
        left = set(s.scalars(select(InboundEvent.event_id)))
    assert left == {"EvRECENTDONE", "EvRECENTFAILED", "EvOLDBUSY"}
    # A retry of a forgotten event would be new again: Slack stops retrying long before.
    assert events_of(h.rt).forget_old() == 0
