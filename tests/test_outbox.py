"""The outbox's rules, through the running app and the fake Slack: what is sent, retried,
dropped or given up, and what the user and the database see in each case."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.db import session_scope
from bot.jobs.prompts import queue_due_prompts, queue_reminders
from bot.jobs.roster import RosterSync
from bot.models import OutboxMessage, Prompt
from bot.services import outbox as outbox_svc
from tests.harness import october_digest_posted, tick
from tests.test_loop_scenario import FRI_1500_UTC, dms_to


def _rows(h):
    """(state, attempts, last error) by "kind:channel" (ids keep counting on PostgreSQL)."""
    with session_scope(h.rt.session_factory) as s:
        return {
            f"{m.kind}:{m.channel}": (m.state, m.attempts, m.last_error)
            for m in s.scalars(select(OutboxMessage))
        }


def test_enqueueing_the_same_key_twice_stores_one_message(db, clock):
    assert outbox_svc.enqueue(
        db, key="prompt:1", kind="prompt", channel="U1", text="a", now=clock()
    )
    assert not outbox_svc.enqueue(
        db, key="prompt:1", kind="prompt", channel="U1", text="b", now=clock()
    )
    assert db.scalars(select(OutboxMessage.text)).all() == ["a"]


def test_two_claims_at_once_never_take_the_same_message(session_factory, clock):
    with session_scope(session_factory) as s:
        for n in range(10):
            outbox_svc.enqueue(s, key=f"k{n}", kind="x", channel="U1", text="t", now=clock())
    with session_scope(session_factory) as s:
        first = outbox_svc.claim(s, owner="p1", now=clock(), limit=6)
    with session_scope(session_factory) as s:
        second = outbox_svc.claim(s, owner="p2", now=clock(), limit=6)
    assert len(first) == 6 and len(second) == 4
    assert not {m.id for m in first} & {m.id for m in second}
    with session_scope(session_factory) as s:
        assert outbox_svc.claim(s, owner="p3", now=clock(), limit=6) == []
        # a lapsed claim is taken back, and the taker is told to look in Slack first
        again = outbox_svc.claim(s, owner="p3", now=clock() + timedelta(minutes=3), limit=20)
    assert len(again) == 10 and all(m.look_first for m in again)


def test_a_requests_own_messages_are_claimed_by_key_and_a_lapsed_one_is_looked_for(
    session_factory, clock
):
    with session_scope(session_factory) as s:
        for n in range(3):
            outbox_svc.enqueue(s, key=f"k{n}", kind="x", channel="U1", text="t", now=clock())
    with session_scope(session_factory) as s:
        mine = outbox_svc.claim(s, owner="p1", now=clock(), limit=10, keys=["k0", "k2"])
    assert [m.key for m in mine] == ["k0", "k2"] and not any(m.look_first for m in mine)
    with session_scope(session_factory) as s:  # taken already: nobody else gets them
        assert outbox_svc.claim(s, owner="p2", now=clock(), limit=10, keys=["k0", "k2"]) == []
    later = clock() + timedelta(minutes=3)  # p1 died mid-send: its claim lapses
    with session_scope(session_factory) as s:
        taken = outbox_svc.claim(s, owner="p2", now=later, limit=10, keys=["k0", "k1"])
    assert {m.key: m.look_first for m in taken} == {"k0": True, "k1": False}


def test_ratelimited_prompt_waits_its_retry_after_then_goes_out_once(harness):
    """A Retry-After puts the message back in the outbox until then: no sender sleeps."""
    h, slack, clock = harness, harness.slack, harness.clock
    october_digest_posted(h)  # the only post of this tick is Ana's prompt
    clock.set(FRI_1500_UTC)
    slack.fail_next("chat.postMessage", retry_after=30)
    tick(h.rt)
    refused = slack.calls_to("chat.postMessage", include_failed=True)[0]
    assert refused.status == 429
    rep = refused.params["channel"]
    clock.advance(seconds=29)
    h.rt.outbox.drain()
    assert dms_to(slack, rep) == []  # not before its time
    clock.advance(seconds=1)
    h.rt.outbox.drain()
    assert len(dms_to(slack, rep)) == 1
    assert slack.calls_to("conversations.history") == []  # a 429 posted nothing: no look
    assert _rows(h)[f"prompt:{rep}"][:2] == ("sent", 2)


def test_a_user_slack_refuses_for_good_is_recorded_not_retried(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    october_digest_posted(h)  # the only post of this tick is Ana's prompt
    clock.set(FRI_1500_UTC)
    slack.fail_next("chat.postMessage", error="user_not_found")
    tick(h.rt)
    assert dms_to(slack, "UANA") == []
    state, attempts, error = _rows(h)["prompt:UANA"]
    assert (state, attempts) == ("failed", 1) and "user_not_found" in error
    with session_scope(h.rt.session_factory) as s:
        prompt = s.scalars(select(Prompt).where(Prompt.user_id == "UANA")).one()
        assert prompt.status == "pending" and "user_not_found" in prompt.last_error
    clock.advance(hours=1)
    tick(h.rt)
    assert dms_to(slack, "UANA") == []  # not hammered
    clock.set(FRI_1500_UTC + timedelta(days=7, minutes=1))
    tick(h.rt)
    with session_scope(h.rt.session_factory) as s:  # the week closed: recorded as missed
        weeks = s.scalars(
            select(Prompt.status).where(Prompt.user_id == "UANA").order_by(Prompt.week_start)
        ).all()
    assert weeks == ["missed", "sent"]  # and the next week's prompt went out as usual


def test_a_reminder_queued_before_the_rep_answered_is_dropped(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    clock.set(FRI_1500_UTC + timedelta(days=3, hours=8))  # Monday 10:00 in Berlin
    queue_reminders(h.rt)  # queued, not sent yet (Slack was slow, say)
    h.dm("UANA", "- the ROI calculator\n- pricing page confused them\n- budgets move to Q1")
    tick(h.rt)
    reminders = [c for c in dms_to(slack, "UANA") if "reminder" in c.params["text"].lower()]
    assert reminders == []
    assert _rows(h)["reminder:UANA"][0] == "dropped"


def test_a_prompt_not_sent_before_its_week_closed_expires(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    queue_due_prompts(h.rt, RosterSync(h.rt))
    clock.set(FRI_1500_UTC + timedelta(days=7, minutes=1))  # Slack down all week, say
    h.rt.outbox.drain()
    assert dms_to(slack, "UANA") == []
    assert _rows(h)["prompt:UANA"][0] == "dropped"


def test_a_second_drain_in_the_same_process_returns_at_once(harness):
    """While one drain runs, another in the same process leaves the outbox to it."""
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    queue_due_prompts(h.rt, RosterSync(h.rt))  # something a second drain could send
    h.rt.outbox._running.acquire()  # as a running drain holds it
    try:
        assert h.rt.outbox.drain().sent == []
        assert dms_to(slack, "UANA") == [] and _rows(h)["prompt:UANA"][:2] == ("pending", 0)
    finally:
        h.rt.outbox._running.release()
    assert [m.channel for m in h.rt.outbox.drain().sent] == ["UANA"]
    assert len(dms_to(slack, "UANA")) == 1


def test_settled_messages_are_deleted_after_the_retention_and_nothing_else(harness):
    """A year of fan-outs does not stay in the table: a drain deletes settled messages older
    than the retention (at most once an hour); waiting ones and recent ones stay."""
    from sqlalchemy import update

    h, clock = harness, harness.clock
    old = clock() - outbox_svc.RETENTION - timedelta(days=1)
    with session_scope(h.rt.session_factory) as s:
        for key, state in (("sent", "sent"), ("failed", "failed"), ("dropped", "dropped")):
            outbox_svc.enqueue(s, key=f"old-{key}", kind="notice", channel="U1", now=clock())
            s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.key == f"old-{key}")
                .values(state=state, created_at=old)
            )
        outbox_svc.enqueue(s, key="old-waiting", kind="notice", channel="U1", now=old)
        s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.key == "old-waiting")
            .values(not_before=clock() + timedelta(days=1))
        )
        outbox_svc.enqueue(s, key="recent", kind="notice", channel="U1", now=clock())
        s.execute(update(OutboxMessage).where(OutboxMessage.key == "recent").values(state="sent"))
    h.rt.outbox.drain()
    with session_scope(h.rt.session_factory) as s:
        assert sorted(s.scalars(select(OutboxMessage.key))) == ["old-waiting", "recent"]


def test_a_drain_asked_for_as_the_running_one_finishes_is_not_lost(harness):
    """Another thread asking for a drain just as the running one leaves its loop (before it
    lets go of its lock) gets its messages sent by the running one, not by the next poll."""
    import threading

    h, slack, clock = harness, harness.slack, harness.clock
    sender = h.rt.outbox
    real = sender._running

    class Late:
        """The drain's lock; on its first release another request comes in first."""

        calls = 0

        def acquire(self, blocking=True):
            return real.acquire(blocking)

        def release(self):
            Late.calls += 1
            if Late.calls == 1:
                with session_scope(h.rt.session_factory) as s:
                    outbox_svc.enqueue(
                        s, key="late", kind="notice", channel="UANA", text="late one", now=clock()
                    )
                other = threading.Thread(target=sender.drain)  # finds the lock taken
                other.start()
                other.join()
            real.release()

    sender._running = Late()
    try:
        sender.drain()
    finally:
        sender._running = real
    assert [c.params["text"] for c in slack.calls_to("chat.postMessage")] == ["late one"]
