"""Fan-out under crashes, double firing, parallel processes and a dropping network."""

from __future__ import annotations

import json
import threading
import time

from sqlalchemy import select

from bot import flows
from bot.db import session_scope
from bot.models import Prompt
from bot.services import feedback as feedback_svc
from tests.test_loop_scenario import FRI_1500_UTC, SAT_0000_UTC, dms_to


def test_restart_in_the_middle_of_the_fan_out_finishes_it_once(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(SAT_0000_UTC)
    flows.sync_roster(h.rt)
    schedule = flows.schedule_of(h.rt)
    # The process claimed both reps' rows, sent Ana's DM, and died before sending Ben's.
    with session_scope(h.rt.session_factory) as s:
        due = feedback_svc.due_prompts(s, reps=feedback_svc_reps(s), schedule=schedule, now=clock())
        ids = {
            d.user_id: feedback_svc.claim_prompt(s, due=d, schedule=schedule, now=clock()).id
            for d in due
        }
    assert flows.deliver_prompt(h.rt, ids["UANA"])
    # A new process starts: nothing is sent twice, Ben's claimed prompt is finished.
    restarted = h.another_process()
    flows.tick(restarted)
    assert len(dms_to(slack, "UANA")) == 1 and dms_to(slack, "UBEN") == []  # claim still fresh
    clock.advance(minutes=3)
    flows.tick(restarted)
    flows.tick(restarted)
    assert len(dms_to(slack, "UANA")) == 1 and len(dms_to(slack, "UBEN")) == 1


def feedback_svc_reps(session):
    from bot.services import roster

    return roster.active_sales(session)


def test_two_processes_firing_together_prompt_each_rep_once(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(SAT_0000_UTC)
    h.tick_together(3, timeout=30)
    assert len(dms_to(slack, "UANA")) == 1 and len(dms_to(slack, "UBEN")) == 1
    with session_scope(h.rt.session_factory) as s:
        assert len(s.scalars(select(Prompt)).all()) == 2


def test_dropped_connections_keep_the_prompt_pending_until_it_goes_out(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    slack.fail_next("chat.postMessage", drop=True)
    flows.tick(h.rt)
    assert dms_to(slack, "UANA") == []
    # a post is never blindly re-sent on a dropped connection: it may have arrived
    to_ana = [
        c
        for c in slack.calls_to("chat.postMessage", include_failed=True)
        if c.params["channel"] == "UANA"
    ]
    assert len(to_ana) == 1
    with session_scope(h.rt.session_factory) as s:
        prompt = s.scalars(select(Prompt)).one()
        assert prompt.status == "pending" and prompt.last_error
    clock.advance(minutes=1)
    flows.tick(h.rt)
    assert dms_to(slack, "UANA") == []  # not yet: a claim is retried after two minutes
    clock.advance(minutes=2, seconds=1)
    flows.tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1
    clock.advance(minutes=10)
    flows.tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Prompt.status)).one() == "sent"


def test_prompt_that_reached_slack_with_its_answer_lost_is_not_sent_again(harness):
    """Slack stores the DM but the answer never comes back (a read timeout): the retry finds
    the message by its metadata and records it instead of prompting the rep a second time."""
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    slack.fail_next("chat.postMessage", delay=4.0)  # past the harness client's 3 s timeout
    flows.tick(h.rt)
    slack.wait_for("chat.postMessage", count=1, timeout=10)  # Slack did post it
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Prompt.status)).one() == "pending"
    clock.advance(minutes=3)
    flows.tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1
    with session_scope(h.rt.session_factory) as s:
        prompt = s.scalars(select(Prompt)).one()
        assert prompt.status == "sent" and prompt.dm_ts == dms_to(slack, "UANA")[0].response["ts"]


def test_channel_post_that_reached_slack_with_its_answer_lost_is_not_posted_again(harness):
    from tests.test_loop_scenario import channel_posts, stored

    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    flows.tick(h.rt)
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
    flows.tick(h.rt)
    flows.tick(h.rt)
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
    flows.tick(h.rt)
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
    flows.tick(h.rt)
    assert f"w{answer.worked[1:]}" in json.dumps(stored(slack, channel_posts(slack)[0])["blocks"])


def test_failed_thread_reply_is_retried_once_and_rep_told_once(harness):
    from tests.test_loop_scenario import channel_posts

    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    flows.tick(h.rt)
    h.dm("UANA", "- a\n- b\n- c")
    post = channel_posts(slack)[0]
    slack.fail_next("chat.postMessage", error="channel_not_found")  # the thread reply fails
    h.react("UMIA", "CMKTG", post.response["ts"], "white_check_mark")
    assert channel_posts(slack, threaded=True) == []
    told_ana = [c for c in dms_to(slack, "UANA") if "acknowledged" in json.dumps(c.params)]
    assert len(told_ana) == 1
    clock.advance(minutes=3)
    flows.tick(h.rt)
    flows.tick(h.rt)
    assert len(channel_posts(slack, threaded=True)) == 1
    told_ana = [c for c in dms_to(slack, "UANA") if "acknowledged" in json.dumps(c.params)]
    assert len(told_ana) == 1


def test_pacer_spaces_calls_to_the_rate():
    from bot.runtime import Pacer

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
