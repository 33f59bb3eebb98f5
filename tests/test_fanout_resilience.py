"""Fan-out under crashes, double firing, parallel processes and a dropping network."""

from __future__ import annotations

import json
import threading
import time

from sqlalchemy import select

from bot.db import session_scope
from bot.delivery.outbox import MARK
from bot.jobs.prompts import queue_due_prompts
from bot.jobs.roster import RosterSync
from bot.models import OutboxMessage, Prompt
from bot.services import outbox as outbox_svc
from tests.harness import october_digest_posted, tick
from tests.test_loop_scenario import FRI_1500_UTC, SAT_0000_UTC, dms_to


def _died_after_sending_to(h, user_id):
    """A process queued both reps' prompts, claimed them, posted ``user_id``'s DM (Slack has
    it) and was killed before it could record that."""
    queue_due_prompts(h.rt, RosterSync(h.rt))
    with session_scope(h.rt.session_factory) as s:
        batch = outbox_svc.claim(s, owner="dead-process", now=h.clock(), limit=10)
    assert {m.channel for m in batch} == {"UANA", "UBEN"}
    sent = next(m for m in batch if m.channel == user_id)
    marker = {"event_type": MARK, "event_payload": {"outbox_id": sent.id}}
    h.rt.client.chat_postMessage(channel=user_id, text="Friday feedback", metadata=marker)


def _assert_each_prompted_once(h, slack):
    assert len(dms_to(slack, "UANA")) == 1 and len(dms_to(slack, "UBEN")) == 1
    with session_scope(h.rt.session_factory) as s:
        prompts = {p.user_id: p for p in s.scalars(select(Prompt))}
        assert {p.status for p in prompts.values()} == {"sent"}
        for user in ("UANA", "UBEN"):
            assert prompts[user].dm_ts == dms_to(slack, user)[0].response["ts"]
        prompts_sent = s.scalars(
            select(OutboxMessage.state).where(OutboxMessage.kind == "prompt")
        ).all()
        assert prompts_sent == ["sent", "sent"]


def test_restart_in_the_middle_of_the_fan_out_finishes_it_once(harness):
    """A killed process's claims lapse after their lease; whichever process then ticks looks
    for each message in Slack first: Ana's is found and recorded, Ben's is sent."""
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(SAT_0000_UTC)
    _died_after_sending_to(h, "UANA")
    restarted = h.another_process()
    tick(restarted)
    assert len(dms_to(slack, "UANA")) == 1 and dms_to(slack, "UBEN") == []  # claims still held
    clock.advance(minutes=3)
    tick(restarted)
    tick(restarted)
    _assert_each_prompted_once(h, slack)


def test_taking_the_scheduler_role_never_takes_back_another_senders_claims(harness):
    """The previous holder may still be alive and sending (its lock was cut, not its
    process): the next scheduler leaves its claims alone until their lease has run out,
    then looks for each message in Slack first, and nothing is sent twice."""
    from bot.jobs.tick import Tick
    from bot.scheduler import start
    from tests.harness import events_of

    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(SAT_0000_UTC)
    _died_after_sending_to(h, "UBEN")
    restarted = h.another_process(sends=False)
    sched = start(restarted, Tick(restarted, events_of(restarted)), paused=True)
    try:  # the test ticks by hand, on the fake clock
        tick(restarted)
        assert dms_to(slack, "UANA") == [] and len(dms_to(slack, "UBEN")) == 1
        clock.advance(minutes=2, seconds=1)  # the lease ran out
        tick(restarted)
    finally:
        sched.shutdown(wait=False)
    _assert_each_prompted_once(h, slack)
    looked = slack.calls_to("conversations.history")
    assert len(looked) == 2  # both were looked for, being claimed when the holder died


def test_two_processes_firing_together_prompt_each_rep_once(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(SAT_0000_UTC)
    h.tick_together(3, timeout=30)
    assert len(dms_to(slack, "UANA")) == 1 and len(dms_to(slack, "UBEN")) == 1
    with session_scope(h.rt.session_factory) as s:
        assert len(s.scalars(select(Prompt)).all()) == 2


def test_dropped_connections_keep_the_prompt_pending_until_it_goes_out(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    october_digest_posted(h)  # the only post of this tick is Ana's prompt
    clock.set(FRI_1500_UTC)
    slack.fail_next("chat.postMessage", drop=True)
    tick(h.rt)
    assert dms_to(slack, "UANA") == []
    # a post is never blindly re-sent on a dropped connection: it may have arrived
    to_ana = [
        c
        for c in slack.calls_to("chat.postMessage", include_failed=True)
        if c.params["channel"] == "UANA"
    ]
    assert len(to_ana) == 1
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Prompt.status)).one() == "pending"
        message = s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "prompt")).one()
        assert message.state == "pending" and message.maybe_sent and message.attempts == 1
        assert "RemoteDisconnected" in message.last_error
    tick(h.rt)
    assert dms_to(slack, "UANA") == []  # not yet: retried after a backoff
    clock.advance(minutes=1)
    tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1
    assert len(slack.calls_to("conversations.history")) == 1  # looked for it before resending
    clock.advance(minutes=10)
    tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Prompt.status)).one() == "sent"


def test_prompt_that_reached_slack_with_its_answer_lost_is_not_sent_again(harness):
    """Slack stores the DM but the answer never comes back (a read timeout): the retry finds
    the message by its metadata and records it instead of prompting the rep a second time."""
    h, slack, clock = harness, harness.slack, harness.clock
    october_digest_posted(h)  # the only post of this tick is Ana's prompt
    clock.set(FRI_1500_UTC)
    slack.fail_next("chat.postMessage", delay=4.0)  # past the harness client's 3 s timeout
    tick(h.rt)
    slack.wait_for("chat.postMessage", count=1, timeout=10)  # Slack did post it
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Prompt.status)).one() == "pending"
    clock.advance(minutes=3)
    tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1
    with session_scope(h.rt.session_factory) as s:
        prompt = s.scalars(select(Prompt)).one()
        assert prompt.status == "sent" and prompt.dm_ts == dms_to(slack, "UANA")[0].response["ts"]


def test_channel_post_that_reached_slack_with_its_answer_lost_is_not_posted_again(harness):
    from tests.test_loop_scenario import channel_posts, stored

    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    call = dms_to(slack, "UANA")[0]
    h.click_button("UANA", stored(slack, call), call.response["channel"], "feedback_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    slack.fail_next("chat.postMessage", delay=4.0)  # the channel post: stored, answer lost
    h.submit("UANA", modal, {"worked": "a", "fell_flat": "b", "insight": "c"})
    deadline = time.monotonic() + 15
    while not channel_posts(slack) and time.monotonic() < deadline:  # Slack stores it late
        time.sleep(0.05)
    assert len(channel_posts(slack)) == 1
    clock.advance(minutes=3)
    tick(h.rt)
    tick(h.rt)
    assert len(channel_posts(slack)) == 1
    from bot.models import LoopPost

    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(LoopPost.ts)).one() == channel_posts(slack)[0].response["ts"]


def test_concurrent_submissions_store_one_answer_and_post_once(harness):
    """Four submissions of the same week at once (double clicks, a DM reply racing the form):
    one answer row, one channel post, no server error."""
    from bot.models import FeedbackAnswer, LoopPost
    from tests.test_loop_scenario import channel_posts, stored

    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    call = dms_to(slack, "UANA")[0]
    h.click_button("UANA", stored(slack, call), call.response["channel"], "feedback_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    replies = []

    def submit(n):
        replies.append(
            h.submit("UANA", modal, {"worked": f"w{n}", "fell_flat": "f", "insight": "i"})
        )

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    h.settle()
    assert [r.status for r in replies] == [200] * 4
    assert len(channel_posts(slack, threaded=False)) == 1
    with session_scope(h.rt.session_factory) as s:
        assert len(s.scalars(select(FeedbackAnswer)).all()) == 1
        post = s.scalars(select(LoopPost)).one()
        answer = s.scalars(select(FeedbackAnswer)).one()
        assert post.ts is not None
    # whatever order they landed in, marketing's post ends up showing the stored answer
    clock.advance(minutes=3)
    tick(h.rt)
    assert f"w{answer.worked[1:]}" in json.dumps(stored(slack, channel_posts(slack)[0])["blocks"])


def test_failed_thread_reply_is_retried_once_and_rep_told_once(harness):
    from tests.test_loop_scenario import channel_posts

    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    h.dm("UANA", "- a\n- b\n- c")
    post = channel_posts(slack)[0]
    slack.fail_next("chat.postMessage", error="channel_not_found")  # the thread reply fails
    h.react("UMIA", "CMKTG", post.response["ts"], "white_check_mark")
    assert channel_posts(slack, threaded=True) == []
    told_ana = [c for c in dms_to(slack, "UANA") if "acknowledged" in json.dumps(c.params)]
    assert len(told_ana) == 1
    clock.advance(minutes=3)
    tick(h.rt)
    tick(h.rt)
    assert len(channel_posts(slack, threaded=True)) == 1
    told_ana = [c for c in dms_to(slack, "UANA") if "acknowledged" in json.dumps(c.params)]
    assert len(told_ana) == 1


def test_pacer_spaces_calls_to_the_rate():
    from bot.slack.client import Pacer

    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(rate=5, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(12):
        pacer.wait()
    # two at once (the burst), then one every 0.2 s: 10 more take 2 s
    assert abs(now[0] - 2.0) < 1e-9 and len(slept) == 10
