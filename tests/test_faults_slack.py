"""Slack misbehaving on the paths people trigger: a rep's answer from the modal, marketing's
acknowledgement, a /winloss entry, and the monthly digest.

Each path meets each fault the fake Slack can inject on the ``chat.postMessage`` that carries
it: ``ratelimited`` with Retry-After, HTTP 500, a connection dropped before Slack took the
message, and an answer slower than the client's timeout (Slack took the message, the bot never
heard back). For each: what the person sees, what is stored, and that the message reaches
Slack exactly once. Every post goes through the outbox, whose client tries a call once
(bot.slack.client.sender_client) and never sleeps: a 429 puts the message back until its
Retry-After has passed on the outbox's clock; any other failure until a backoff has, and the
next drain (the minute tick's) sends it, first looking for it in Slack when the answer was lost.

The fan-out of weekly prompts (tests/test_fanout_resilience.py, test_loop_scenario.py), the
win/loss nudge and escalation (test_winloss_scenario.py) and the digest chart upload
(test_digest.py) are covered elsewhere, as is the slow channel post after a modal answer.

Bounded: the clients time out after CLIENT_TIMEOUT seconds and wait RETRY_WAIT between their
own retries of a dropped read (production's retry counts are kept; only the waits are
shortened); Retry-After is one second, of the fake clock.
"""

from __future__ import annotations

import time
from datetime import date

import pytest
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from sqlalchemy import func, select

from bot.db import session_scope
from bot.delivery.outbox import MARK
from bot.models import (
    Acknowledgement,
    Deal,
    Digest,
    FeedbackAnswer,
    LoopPost,
    Prompt,
    WinLossEntry,
)
from bot.slack import history
from tests.harness import tick
from tests.test_digest import NOV_2_0900_NEW_YORK, build_posting_data
from tests.test_loop_scenario import FRI_1500_UTC, all_text, dms_to, stored
from tests.test_winloss_scenario import CLOSED, fill, submit_winloss

OCTOBER = date(2026, 10, 1)  # the digest month due in November 2026
CLIENT_TIMEOUT = 1.5  # seconds; the fake's slow answer comes after SLOW_ANSWER
SLOW_ANSWER = 2.2
RETRY_WAIT = 0.05
RETRY_AFTER = 1

# How each fault is injected (the outbox's client makes one try of a call, even of a 500).
FAULTS = {
    "ratelimited": {"error": "ratelimited", "retry_after": RETRY_AFTER},
    "server_error": {"status": 500},
    "dropped": {"drop": True},
    "slow": {"delay": SLOW_ANSWER},
}
ALL = list(FAULTS)
# What Slack answered the message's tries: its first (what the fault did) ...
FIRST_TRY = {"ratelimited": [429], "server_error": [500], "dropped": [0], "slow": [200]}
# ... and all of them once it is out: one retry, or none when the retry found it in Slack.
EVERY_TRY = {
    "ratelimited": [429, 200],
    "server_error": [500, 200],
    "dropped": [0, 200],
    "slow": [200],
}
# Slack paced us: the message waits out Retry-After in the outbox, and nobody is told.
ABSORBED = {"ratelimited"}
# The answer was lost, so Slack may have the message: the retry looks for it first. (A 429
# or Slack's own 500 says nothing was posted.)
MAYBE_SENT = {"dropped", "slow"}


@pytest.fixture
def settings_overrides():
    return {
        "WINLOSS_CHANNEL": "CWINLOSS",
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "SALES_MANAGERS": "UMGR",
        "DIGEST_TIMEZONE": "America/New_York",
        # One message at a time, in the order queued: a fault injected on the next
        # chat.postMessage meets the message the test means (an acknowledgement's thread
        # reply, not the rep's DM queued with it).
        "OUTBOX_WORKERS": "1",
    }


@pytest.fixture
def h(harness):
    """The harness with a short client timeout and short waits between client retries (for
    the outbox's own client too: it posts)."""
    for client in (harness.rt.client, harness.rt.outbox.client):
        client.timeout = CLIENT_TIMEOUT
        for handler in client.retry_handlers:
            if hasattr(handler, "interval_calculator"):
                handler.interval_calculator = FixedValueRetryIntervalCalculator(RETRY_WAIT)
    return harness


def digest_already_posted(h, *months: date) -> None:
    """The monthly digest is not under test here: its month is recorded as posted (with its
    chart), so a tick does not spend a second rendering the chart."""
    with session_scope(h.rt.session_factory) as s:
        for month in months:
            s.add(Digest(month=month, channel="CDIGEST", ts="1.000001", chart_file_id="F0"))


def inject(slack, fault: str, method: str = "chat.postMessage") -> None:
    slack.fail_next(method, **FAULTS[fault])


def tries_to(slack, channel, *, threaded=False):
    """Every chat.postMessage the bot made to ``channel`` (failed and dropped ones too)."""
    return [
        c
        for c in slack.calls_to("chat.postMessage", include_failed=True)
        if c.params.get("channel") == channel and bool(c.params.get("thread_ts")) == threaded
    ]


def delivered(slack, channel, *, threaded=False):
    return [c for c in tries_to(slack, channel, threaded=threaded) if c.ok]


def statuses(slack, channel, *, threaded=False):
    return [c.status for c in tries_to(slack, channel, threaded=threaded)]


def top_level_messages(slack, channel):
    """What a person scrolling ``channel`` sees: the messages Slack stores, thread replies
    aside."""
    return [
        m
        for m in slack.messages.get(channel, {}).values()
        if not m.get("thread_ts") or m.get("thread_ts") == m.get("ts")
    ]


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def told(slack, user_id, words):
    return [c for c in dms_to(slack, user_id) if words in all_text(c.params)]


def count(h, model, *where):
    with session_scope(h.rt.session_factory) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def check_the_fault_happened(slack, fault, channel, *, threaded=False):
    """The injected fault really met the message's first try, and nothing tried it again at
    once (so the test is not passing by accident). A slow answer is first waited for: Slack
    stores the message (and answers 200) after the client gave up."""
    if fault == "slow":
        wait_until(lambda: tries_to(slack, channel, threaded=threaded))
    assert statuses(slack, channel, threaded=threaded) == FIRST_TRY[fault]


def wait_out_retry_after(h, channel, *, threaded=False):
    """Slack answered 429 with Retry-After: the message waits in the outbox until then, on
    the outbox's clock. The sender neither sleeps through it nor tries sooner; the first
    drain after it sends the message."""
    assert statuses(h.slack, channel, threaded=threaded) == [429]
    h.clock.advance(seconds=RETRY_AFTER / 2)
    h.rt.outbox.drain()
    assert statuses(h.slack, channel, threaded=threaded) == [429]  # not yet
    h.clock.advance(seconds=RETRY_AFTER / 2)
    h.rt.outbox.drain()
    assert statuses(h.slack, channel, threaded=threaded) == [429, 200]


def retry_by_tick(h, minutes=3):
    """What happens next: the scheduler's minute tick, a few minutes on, twice."""
    h.clock.advance(minutes=minutes)
    tick(h.rt)
    h.clock.advance(minutes=1)
    tick(h.rt)


# --- a rep answers through the modal -------------------------------------------------------


ANSWER = {"worked": "ROI opener", "fell_flat": "Security deck", "insight": "Budgets move to Q3"}


@pytest.mark.parametrize("fault", [f for f in ALL if f != "slow"])  # slow: test_fanout_resilience
def test_modal_answer_when_slack_fails_the_marketing_post(h, fault):
    slack, clock = h.slack, h.clock
    digest_already_posted(h, OCTOBER)
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    (prompt,) = dms_to(slack, "UANA")
    h.click_button("UANA", stored(slack, prompt), prompt.response["channel"], "feedback_open")
    modal = slack.calls_to("views.open")[-1].params["view"]

    inject(slack, fault)
    reply = h.submit("UANA", modal, ANSWER)

    # The modal closes (empty 200) and the DM shows the week as answered, whatever Slack did.
    assert (reply.status, reply.body) == (200, "")
    assert "Answered" in stored(slack, prompt)["text"]
    with session_scope(h.rt.session_factory) as s:
        answer = s.scalars(select(FeedbackAnswer)).one()
        assert (answer.worked, answer.fell_flat, answer.insight) == tuple(ANSWER.values())
        assert s.scalars(select(Prompt.status)).one() == "answered"
    check_the_fault_happened(slack, fault, "CMKTG")
    if fault in ABSORBED:
        assert delivered(slack, "CMKTG") == []
        wait_out_retry_after(h, "CMKTG")  # Retry-After is honoured
        assert len(delivered(slack, "CMKTG")) == 1
        assert told(slack, "UANA", "could not post") == []
    else:
        assert delivered(slack, "CMKTG") == []
        assert len(told(slack, "UANA", "could not post it")) == 1  # and the rep knows
        assert count(h, LoopPost, LoopPost.ts.is_not(None)) == 0
        retry_by_tick(h)

    (post,) = delivered(slack, "CMKTG")
    assert "ROI opener" in all_text(post.params) and "<@UANA>" in all_text(post.params)
    assert statuses(slack, "CMKTG") == EVERY_TRY[fault]
    assert len(top_level_messages(slack, "CMKTG")) == 1
    assert len(told(slack, "UANA", "could not post")) == (0 if fault in ABSORBED else 1)
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(LoopPost.ts)).one() == post.response["ts"]
    assert count(h, FeedbackAnswer) == 1
    assert slack.server_errors == []


# --- marketing closes the loop --------------------------------------------------------------

NOTE = "Moving the budget to the ROI webinar"


def _answered_post(h):
    """Ana answered this week by DM; marketing's post is in the channel."""
    digest_already_posted(h, OCTOBER)
    h.clock.set(FRI_1500_UTC)
    tick(h.rt)
    h.dm("UANA", "- ROI opener\n- Security deck\n- Budgets move to Q3")
    (post,) = delivered(h.slack, "CMKTG")
    return post


def _acknowledge(h, post, via):
    if via == "reaction":
        return h.react("UMIA", "CMKTG", post.response["ts"], "white_check_mark")
    h.click_button("UMIA", stored(h.slack, post), "CMKTG", "loop_close")
    note_modal = h.slack.calls_to("views.open")[-1].params["view"]
    return h.submit("UMIA", note_modal, {"note": NOTE})


@pytest.mark.parametrize("via", ["reaction", "note"])
@pytest.mark.parametrize("fault", ALL)
def test_acknowledgement_when_slack_fails_the_thread_reply(h, fault, via):
    slack = h.slack
    post = _answered_post(h)
    inject(slack, fault)  # the first message after the acknowledgement: the thread reply
    reply = _acknowledge(h, post, via)
    assert reply.status == 200

    # Stored once, whatever Slack did.
    with session_scope(h.rt.session_factory) as s:
        ack = s.scalars(select(Acknowledgement)).one()
        assert (ack.user_id, ack.via) == ("UMIA", via)
        assert ack.note == (NOTE if via == "note" else None)
        assert s.scalars(select(LoopPost.first_ack_at)).one() is not None
    check_the_fault_happened(slack, fault, "CMKTG", threaded=True)
    # The rep is told at once either way (their DM is a separate message).
    assert len(told(slack, "UANA", "from marketing read")) == 1
    if fault in ABSORBED:
        assert delivered(slack, "CMKTG", threaded=True) == []
        wait_out_retry_after(h, "CMKTG", threaded=True)
        assert len(delivered(slack, "CMKTG", threaded=True)) == 1
        assert told(slack, "UMIA", "could not reply in the thread") == []
    else:
        # slow: Slack stored the reply, but the bot does not know it did
        assert len(delivered(slack, "CMKTG", threaded=True)) == (fault == "slow")
        # the marketer knows the reply is not there yet
        assert len(told(slack, "UMIA", "could not reply in the thread")) == 1
        retry_by_tick(h)

    replies = delivered(slack, "CMKTG", threaded=True)
    assert len(replies) == 1, f"{len(replies)} thread replies"
    thread_reply = replies[0]
    assert thread_reply.params["thread_ts"] == post.response["ts"]
    assert statuses(slack, "CMKTG", threaded=True) == EVERY_TRY[fault]
    # What a person opening the thread sees: the post and one reply.
    thread = slack.messages["CMKTG"]
    assert [ts for ts, m in thread.items() if m.get("thread_ts") == post.response["ts"]] == [
        post.response["ts"],
        thread_reply.response["ts"],
    ]
    # When Slack may have had the reply, the retry looked in the thread
    # (conversations.replies) before posting again.
    looked = slack.calls_to("conversations.replies")
    assert bool(looked) == (fault in MAYBE_SENT)
    assert all(c.params["ts"] == post.response["ts"] for c in looked)
    assert "<@UMIA> closed the loop" in all_text(thread_reply.params)
    assert len(told(slack, "UANA", "from marketing read")) == 1  # the rep: once
    assert len(told(slack, "UMIA", "could not reply")) == (0 if fault in ABSORBED else 1)
    assert "Loop closed by <@UMIA>" in all_text(stored(slack, post))
    with session_scope(h.rt.session_factory) as s:
        ack = s.scalars(select(Acknowledgement)).one()
        assert ack.thread_ts == thread_reply.response["ts"]
        assert ack.rep_notified_at is not None
    assert count(h, Acknowledgement) == 1
    assert slack.server_errors == []


def test_thread_reply_is_not_re_sent_while_its_thread_cannot_be_read(h):
    """The reply reached Slack with its answer lost; the retry's look into the thread fails
    (a 500): nothing is posted blindly, and the next retry finds the reply and records it."""
    slack = h.slack
    post = _answered_post(h)
    inject(slack, "slow")
    _acknowledge(h, post, "reaction")
    check_the_fault_happened(slack, "slow", "CMKTG", threaded=True)
    inject(slack, "server_error", "conversations.replies")
    h.clock.advance(minutes=3)
    tick(h.rt)
    assert [c.status for c in slack.calls_to("conversations.replies", include_failed=True)] == [500]
    assert len(tries_to(slack, "CMKTG", threaded=True)) == 1  # not posted again blindly
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Acknowledgement.thread_ts)).one() is None
    h.clock.advance(minutes=3)  # the retry's backoff has passed
    tick(h.rt)
    (thread_reply,) = delivered(slack, "CMKTG", threaded=True)
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Acknowledgement.thread_ts)).one() == thread_reply.response["ts"]
    assert len(told(slack, "UMIA", "could not reply")) == 1  # told once, not at each retry
    assert slack.server_errors == []


def test_looking_for_a_reply_reads_every_page_of_a_thread(h):
    """A long thread: the marked reply is on the second page of conversations.replies."""
    slack = h.slack
    parent = slack.add_message("CMKTG", "a busy post", user="UANA")
    for n in range(250):
        slack.add_message("CMKTG", f"reply {n}", user="UANA", thread_ts=parent)
    marker = {"event_type": MARK, "event_payload": {"outbox_id": 7}}
    sent = h.rt.client.chat_postMessage(
        channel="CMKTG", thread_ts=parent, text="ours", metadata=marker
    )
    found = history.find(
        h.rt.client,
        channel="CMKTG",
        thread_ts=parent,
        oldest=None,
        match=history.marked(MARK, "outbox_id", 7),
    )
    assert found is not None and (found["ts"], found["channel"]) == (sent["ts"], "CMKTG")
    assert len(slack.calls_to("conversations.replies")) == 2
    nothing = history.find(
        h.rt.client,
        channel="CMKTG",
        thread_ts=parent,
        oldest=None,
        match=history.marked(MARK, "outbox_id", 8),
    )
    assert nothing is None


def test_acknowledgement_whose_rep_dm_reached_slack_unanswered_is_not_sent_twice(h):
    slack = h.slack
    post = _answered_post(h)
    slack.fail_next("chat.postMessage", delay=0.01)  # the thread reply: answered normally
    slack.fail_next("chat.postMessage", delay=SLOW_ANSWER)  # the rep's DM: answer lost
    _acknowledge(h, post, "reaction")
    wait_until(lambda: told(slack, "UANA", "from marketing read"))
    assert len(delivered(slack, "CMKTG", threaded=True)) == 1
    retry_by_tick(h)
    assert len(told(slack, "UANA", "from marketing read")) == 1
    assert len(delivered(slack, "CMKTG", threaded=True)) == 1


# --- a rep logs a win/loss with /winloss ----------------------------------------------------

ENTRY = {
    "deal_name": "Globex pilot",
    "outcome": "won",
    "closed_on": "2026-11-19",
    "reason": "Their CFO said the live ROI calculator made the decision easy for her",
    "reason_category": "Other",
    "competitor_new": "Initech",
    "insight": "Demo the ROI calculator",
}


@pytest.mark.parametrize("fault", ALL)
def test_winloss_entry_when_slack_fails_the_channel_post(h, fault):
    slack, clock = h.slack, h.clock
    digest_already_posted(h, OCTOBER)
    clock.set(CLOSED)
    h.command("UANA", "", command="/winloss")
    modal = slack.calls_to("views.open")[-1].params["view"]

    inject(slack, fault)
    reply = submit_winloss(h, "UANA", modal, fill(modal, **ENTRY))
    assert (reply.status, reply.body) == (200, "")  # the form closes: the entry is saved

    with session_scope(h.rt.session_factory) as s:
        entry = s.scalars(select(WinLossEntry)).one()
        assert (entry.deal.name, entry.outcome, entry.author_user_id) == (
            "Globex pilot",
            "won",
            "UANA",
        )
        assert entry.reason == ENTRY["reason"]
    check_the_fault_happened(slack, fault, "CWINLOSS")
    if fault in ABSORBED:
        assert delivered(slack, "CWINLOSS") == []
        wait_out_retry_after(h, "CWINLOSS")
        assert len(delivered(slack, "CWINLOSS")) == 1
        assert told(slack, "UANA", "could not post") == []
    else:
        assert len(delivered(slack, "CWINLOSS")) == (fault == "slow")
        assert len(told(slack, "UANA", "could not post it")) == 1
        retry_by_tick(h)

    (post,) = delivered(slack, "CWINLOSS")
    assert "Globex pilot" in all_text(post.params) and "Won" in all_text(post.params)
    assert statuses(slack, "CWINLOSS") == EVERY_TRY[fault]
    assert len(top_level_messages(slack, "CWINLOSS")) == 1
    assert len(told(slack, "UANA", "could not post")) == (0 if fault in ABSORBED else 1)
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(LoopPost.ts)).one() == post.response["ts"]
    assert (count(h, Deal), count(h, WinLossEntry), count(h, LoopPost)) == (1, 1, 1)
    assert slack.server_errors == []


# --- the monthly digest ---------------------------------------------------------------------


@pytest.mark.parametrize("fault", ALL)
def test_digest_when_slack_fails_its_post(h, fault):
    slack, clock = h.slack, h.clock
    build_posting_data(h.rt.session_factory)
    clock.set(NOV_2_0900_NEW_YORK)
    inject(slack, fault)  # nobody is due a prompt on a Monday: the first post is the digest
    tick(h.rt)

    check_the_fault_happened(slack, fault, "CDIGEST")
    if fault in ABSORBED:
        assert delivered(slack, "CDIGEST") == [] and slack.files == {}
        wait_out_retry_after(h, "CDIGEST")
        assert len(delivered(slack, "CDIGEST")) == 1 and len(slack.files) == 1
    else:
        assert len(delivered(slack, "CDIGEST")) == (fault == "slow")
        assert slack.files == {}
        with session_scope(h.rt.session_factory) as s:
            assert s.scalars(select(Digest.ts)).one() is None  # queued, not recorded as posted
        tried = len(tries_to(slack, "CDIGEST"))
        clock.advance(seconds=0.5)
        tick(h.rt)  # within the first wait (1 s after Slack's 5xx, 5 s or so otherwise)
        assert len(tries_to(slack, "CDIGEST")) == tried
        clock.advance(minutes=10)
        tick(h.rt)
        clock.advance(minutes=1)
        tick(h.rt)

    (post,) = delivered(slack, "CDIGEST")
    assert "Closeloop digest — October 2026" in all_text(post.params)
    assert statuses(slack, "CDIGEST") == EVERY_TRY[fault]
    assert len(top_level_messages(slack, "CDIGEST")) == 1
    (chart,) = slack.files.values()
    assert chart["thread_ts"] == post.response["ts"]
    with session_scope(h.rt.session_factory) as s:
        row = s.scalars(select(Digest)).one()
        assert (row.ts, row.chart_file_id) == (post.response["ts"], chart["id"])
    assert slack.server_errors == []


def test_a_post_slack_refuses_for_good_is_told_to_its_author(harness):
    """Slack refusing a loop post for good (here msg_too_long) gives the post up; the rep is
    told their answer is saved but not posted, once, instead of hearing nothing."""
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    slack.fail_next("chat.postMessage", error="msg_too_long")
    h.dm("UANA", "- a\n- b\n- c")
    assert delivered(slack, "CMKTG") == []
    (notice,) = told(slack, "UANA", "Slack refused to post it")
    assert "msg_too_long" in notice.params["text"] and "saved" in notice.params["text"]
    clock.advance(minutes=30)
    tick(h.rt)  # given up: not retried, not told twice
    assert delivered(slack, "CMKTG") == []
    assert len(told(slack, "UANA", "Slack refused to post it")) == 1
