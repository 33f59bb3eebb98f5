"""The findings of "One way through the code, one way out to Slack", each reproduced.

Every message leaves through the outbox, and a sender that lost its claim records nothing;
a Retry-After never outlives a claim; looking before resending reads the channel back to
the first attempt; an event is answered before any Web API call; a reaction counts once,
whatever its skin tone. (The lock-loss fan-out with real processes on PostgreSQL is in
test_lock_loss.py.)
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import select

from bot.db import session_scope
from bot.models import Acknowledgement, LoopPost, OutboxMessage
from bot.services import outbox as outbox_svc
from tests.harness import october_digest_posted, tick
from tests.test_loop_scenario import FRI_1500_UTC, all_text, channel_posts, dms_to, stored

BULLETS = "- the ROI calculator\n- pricing page confused them\n- budgets move to Q1"


def _answered(h) -> None:
    """Ana was prompted and answered by DM; nothing has been posted for marketing yet when
    a test has made the channel post fail."""
    october_digest_posted(h)
    h.clock.set(FRI_1500_UTC)
    tick(h.rt)
    assert len(dms_to(h.slack, "UANA")) == 1
    h.dm("UANA", BULLETS)


def _answer_by_form(h) -> None:
    """Ana answers with the form: the one chat.postMessage this makes is marketing's post
    (the prompt DM is edited with chat.update)."""
    call = dms_to(h.slack, "UANA")[0]
    h.click_button("UANA", stored(h.slack, call), call.response["channel"], "feedback_open")
    modal = h.slack.calls_to("views.open")[-1].params["view"]
    h.submit("UANA", modal, {"worked": "ROI opener", "fell_flat": "price", "insight": "Q1"})


def _post_row(h) -> LoopPost:
    with session_scope(h.rt.session_factory) as s:
        return s.scalars(select(LoopPost)).one()


# --- a sender that lost its claim records nothing ------------------------------------------


def test_a_sender_whose_claim_lapsed_cannot_record_its_result(session_factory, clock):
    """The fence: the UPDATE that records a result names the claim's token."""
    with session_scope(session_factory) as s:
        outbox_svc.enqueue(s, key="notice:1", kind="notice", channel="U1", text="hi", now=clock())
    with session_scope(session_factory) as s:
        (slow,) = outbox_svc.claim(s, owner="slow", now=clock(), limit=1)
    later = clock() + outbox_svc.LEASE + timedelta(seconds=1)
    with session_scope(session_factory) as s:
        (taker,) = outbox_svc.claim(s, owner="taker", now=later, limit=1)
    assert taker.look_first and taker.token != slow.token
    with session_scope(session_factory) as s:
        assert not outbox_svc.mark_sent(s, slow, channel="D1", ts="1.1", now=later)
        assert not outbox_svc.mark_retry(s, slow, error="x", maybe_sent=True, now=later)
        assert not outbox_svc.release(s, slow, not_before=later)
        assert outbox_svc.mark_sent(s, taker, channel="D1", ts="2.2", now=later)
    with session_scope(session_factory) as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert (row.state, row.sent_ts) == ("sent", "2.2")


def test_a_stopped_sender_starts_nothing_and_gives_its_claims_back(harness):
    """The process lost the scheduler role mid-drain: what it claimed and has not started
    goes back to the outbox (not counted as an attempt), for the new holder to send."""
    h, slack = harness, harness.slack
    october_digest_posted(h)
    slack.set_latency(0.5, methods=["chat.postMessage"])
    for n in range(6):
        h.rt.tell("UANA", f"notice {n}")
    h.settle()  # sent: h.rt sends
    slack.set_latency(0)
    mark = len(slack.calls_to("chat.postMessage"))
    with session_scope(h.rt.session_factory) as s:
        for n in range(20):
            outbox_svc.enqueue(
                s, key=f"notice:x{n}", kind="notice", channel="UBEN", text=f"x{n}", now=h.clock()
            )
    slack.set_latency(0.5, methods=["chat.postMessage"])
    sender = h.another_process().outbox
    drained: list = []
    thread = threading.Thread(target=lambda: drained.append(sender.drain()))
    thread.start()
    slack.wait_for("chat.postMessage", count=mark + 1, timeout=5)
    sender.stop()  # the role is lost
    thread.join(10)
    slack.set_latency(0)
    started = len(slack.calls_to("chat.postMessage", include_failed=True)) - mark
    assert 0 < started < 20
    with session_scope(h.rt.session_factory) as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.channel == "UBEN")).all()
    sent = [r for r in rows if r.state == "sent"]
    waiting = [r for r in rows if r.state == "pending"]
    assert len(sent) == started and len(sent) + len(waiting) == 20
    assert all(r.attempts == 0 and not r.maybe_sent for r in waiting)
    h.rt.outbox.drain()  # the new holder
    assert len([c for c in dms_to(slack, "UBEN") if c.params["text"].startswith("x")]) == 20


# --- (2) a wait outlives its claim ---------------------------------------------------------


def test_a_seventy_second_retry_after_three_times_still_posts_once(harness):
    """Marketing's post is answered 429 with Retry-After: 70 three times. Nothing sleeps:
    the post waits in the outbox, the minute ticks in between post nothing, and the fourth
    try posts it, once. A reaction on it then closes the loop."""
    h, slack, clock = harness, harness.slack, harness.clock
    october_digest_posted(h)
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    slack.fail_next("chat.postMessage", retry_after=70, times=3)
    started = time.monotonic()
    _answer_by_form(h)
    for _ in range(8):  # eight minutes of ticks, 70 s of Retry-After at a time
        clock.advance(seconds=60)
        tick(h.rt)
    assert time.monotonic() - started < 30  # no sender slept through a Retry-After
    refused = [
        c for c in slack.calls_to("chat.postMessage", include_failed=True) if c.status == 429
    ]
    assert len(refused) == 3
    (post,) = channel_posts(slack, threaded=False)
    assert _post_row(h).ts == post.response["ts"]
    h.react("UMIA", "CMKTG", post.response["ts"], "white_check_mark")
    with session_scope(h.rt.session_factory) as s:
        assert len(s.scalars(select(Acknowledgement)).all()) == 1
    assert len(channel_posts(slack, threaded=True)) == 1


# --- (3) look-before-resend reads one page -------------------------------------------------


def test_a_post_answered_too_late_in_a_busy_channel_is_found_not_posted_again(harness):
    """Slack stores marketing's post but answers after the client gave up; 250 messages
    arrive in the channel after it. The retry pages back through the history to the first
    attempt, finds it by its outbox id and records it."""
    h, slack, clock = harness, harness.slack, harness.clock
    october_digest_posted(h)
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    slack.history_page_cap = 100  # Slack answers with fewer than asked, as it may
    slack.fail_next("chat.postMessage", delay=4.0)  # past the harness client's 3 s timeout
    _answer_by_form(h)
    deadline = time.monotonic() + 15
    while not channel_posts(slack) and time.monotonic() < deadline:  # Slack stores it late
        time.sleep(0.05)
    (first,) = channel_posts(slack)
    for n in range(250):
        slack.add_message("CMKTG", f"chatter {n}", user="UMIA")
    with session_scope(h.rt.session_factory) as s:
        row = s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "loop_post")).one()
        assert row.state == "pending" and row.maybe_sent
    clock.advance(minutes=2)
    tick(h.rt)
    tick(h.rt)
    assert channel_posts(slack) == [first]  # not posted again
    assert len(slack.calls_to("conversations.history")) >= 3  # 250 newer, 100 a page
    assert _post_row(h).ts == first.response["ts"]


# --- events answered first ------------------------------------------------------------------


def test_with_slack_at_one_second_a_call_every_event_is_answered_within_a_second(harness):
    """The event's 200 waits on no Web API call; what it causes is sent afterwards."""
    h, slack, clock = harness, harness.slack, harness.clock
    october_digest_posted(h)
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    slack.set_latency(1.0)
    took = []
    started = time.monotonic()
    assert h.dm("UANA", BULLETS, settle=False).status == 200
    took.append(time.monotonic() - started)
    h.settle()
    (post,) = channel_posts(slack, threaded=False)  # everything it caused, still sent
    started = time.monotonic()
    assert (
        h.react("UMIA", "CMKTG", post.response["ts"], "white_check_mark", settle=False).status
        == 200
    )
    took.append(time.monotonic() - started)
    slack.fail_next("chat.postMessage", status=500, times=20)  # and with posting failing
    started = time.monotonic()
    assert h.dm("UBEN", "hello?", settle=False).status == 200
    took.append(time.monotonic() - started)
    assert max(took) < 1.0, took
    h.settle()
    slack.clear_faults()
    slack.set_latency(0)
    clock.advance(minutes=5)
    tick(h.rt)
    assert len(channel_posts(slack, threaded=True)) == 1  # the thread reply
    assert [c for c in dms_to(slack, "UANA") if "acknowledged" in all_text(c.params)]
    assert len(dms_to(slack, "UBEN")) == 1  # "no open prompt", once the posts go through


# --- skin tones ----------------------------------------------------------------------------


def test_two_skin_tones_of_the_ack_emoji_are_one_acknowledgement(harness):
    h, slack = harness, harness.slack
    _answered(h)
    (post,) = channel_posts(slack, threaded=False)
    ts = post.response["ts"]
    h.react("UMIA", "CMKTG", ts, "white_check_mark::skin-tone-2")
    h.react("UMIA", "CMKTG", ts, "white_check_mark::skin-tone-3")
    with session_scope(h.rt.session_factory) as s:
        acks = s.scalars(select(Acknowledgement)).all()
    assert len(acks) == 1 and acks[0].dedup_key == "reaction:UMIA:white_check_mark"
    (reply,) = channel_posts(slack, threaded=True)
    text = all_text(reply.params)
    assert ":white_check_mark:" in text and "skin-tone" not in text
    told = [c for c in dms_to(slack, "UANA") if "acknowledged" in all_text(c.params)]
    assert len(told) == 1


# --- what a request causes goes out from the process that answered it ------------------------


def test_a_worker_without_the_scheduler_role_sends_what_its_own_request_caused(harness):
    """On PostgreSQL, a gunicorn worker that does not hold the scheduler role sends the
    marketing post its answer caused right after the ack (no wait for the role's poll), and
    nothing else: a message queued elsewhere is left to the process with the role. On
    SQLite (one writer at a time) it leaves its own to the role's drain as well."""
    from tests.harness import Harness

    h, slack = harness, harness.slack
    october_digest_posted(h)
    h.clock.set(FRI_1500_UTC)
    tick(h.rt)
    h.rt.outbox.stop()  # the role holder sends nothing while the test looks
    with session_scope(h.rt.session_factory) as s:
        outbox_svc.enqueue(
            s, key="notice:elsewhere", kind="notice", channel="UBEN", text="x", now=h.clock()
        )
    worker = Harness(
        settings=h.settings, slack=slack, session_factory=h.rt.session_factory, clock=h.clock
    )
    worker.rt.outbox.stop()  # no scheduler role
    worker.start()
    try:
        worker.dm("UANA", BULLETS)
    finally:
        worker.stop()
    if not worker.rt.sends_anywhere:
        assert channel_posts(slack) == []
        h.rt.outbox.resume()
        h.rt.outbox.drain()  # the role's drain sends it, and the notice queued elsewhere
        assert len(channel_posts(slack, threaded=False)) == 1 and len(dms_to(slack, "UBEN")) == 1
        return
    (post,) = channel_posts(slack, threaded=False)
    assert "the ROI calculator" in all_text(post.params)
    assert [c for c in dms_to(slack, "UANA") if "sent to marketing" in all_text(c.params)]
    assert dms_to(slack, "UBEN") == []
    with session_scope(h.rt.session_factory) as s:
        left = s.scalars(select(OutboxMessage.state).where(OutboxMessage.key == "notice:elsewhere"))
        assert left.one() == "pending"


# --- from the review: edits, failing renders, what goes first -------------------------------


def test_an_edit_asked_for_while_the_same_edit_is_being_sent_goes_once_more(session_factory, clock):
    """The edit being sent may carry the older version: once it is recorded, it is made
    pending again (not dropped, not sent twice at once), and goes with the latest."""
    from bot.models import Op

    def edit() -> None:
        with session_scope(session_factory) as s:
            outbox_svc.enqueue(
                s,
                key="post-edit:1",
                kind="loop_post_edit",
                op=Op.UPDATE,
                channel="C1",
                ts="1.1",
                now=clock(),
                again=True,
            )

    edit()
    with session_scope(session_factory) as s:
        (first,) = outbox_svc.claim(s, owner="p1", now=clock(), limit=5)
    edit()  # a newer change while the first is on its way
    with session_scope(session_factory) as s:
        assert outbox_svc.claim(s, owner="p2", now=clock(), limit=5) == []  # not twice at once
        assert outbox_svc.mark_sent(s, first, channel="C1", ts="1.1", now=clock())
    with session_scope(session_factory) as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert (row.state, row.rearm, row.attempts) == ("pending", False, 0)
        (second,) = outbox_svc.claim(s, owner="p1", now=clock(), limit=5)
        assert outbox_svc.mark_sent(s, second, channel="C1", ts="1.1", now=clock())
    with session_scope(session_factory) as s:
        assert s.scalars(select(OutboxMessage.state)).one() == "sent"


def test_a_message_whose_rendering_fails_does_not_hold_up_the_others(harness, caplog):
    from bot.delivery.outbox import Kind
    from bot.models import OutboxKind

    h, slack = harness, harness.slack
    october_digest_posted(h)
    kinds = h.rt.outbox.kinds._kinds
    real = kinds[OutboxKind.NOTICE]

    def boom(session, message, now):
        if message.text == "boom":
            raise RuntimeError("a bug in a render hook")
        return message

    kinds[OutboxKind.NOTICE] = Kind(render=boom)
    try:
        with session_scope(h.rt.session_factory) as s:
            for n, text in enumerate(("boom", "fine")):
                outbox_svc.enqueue(
                    s, key=f"notice:{n}", kind="notice", channel="UANA", text=text, now=h.clock()
                )
        h.rt.outbox.drain()
    finally:
        kinds[OutboxKind.NOTICE] = real
    assert [c.params["text"] for c in dms_to(slack, "UANA")] == ["fine"]
    with session_scope(h.rt.session_factory) as s:
        row = s.scalars(select(OutboxMessage).where(OutboxMessage.key == "notice:0")).one()
    assert row.state == "pending" and "a bug in a render hook" in row.last_error
    assert "rendering outbox message" in caplog.text


def test_what_people_wait_for_is_claimed_before_a_fan_out(session_factory, clock):
    with session_scope(session_factory) as s:
        for n in range(5):
            outbox_svc.enqueue(s, key=f"prompt:{n}", kind="prompt", channel=f"U{n}", now=clock())
        outbox_svc.enqueue(s, key="post:1", kind="loop_post", channel="CMKTG", now=clock())
    with session_scope(session_factory) as s:
        (first,) = outbox_svc.claim(s, owner="p1", now=clock(), limit=1)
    assert first.key == "post:1"
