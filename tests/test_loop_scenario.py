"""The whole weekly loop, end to end, driven the way Slack drives it.

Two reps in different time zones (Ana in Berlin, Ben in Los Angeles), one marketer (Mia) and
one outsider. Slack is the fake Web API on 127.0.0.1; requests are signed; the clock is ours.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from bot.db import session_scope
from bot.models import (
    Acknowledgement,
    FeedbackAnswer,
    InboundEvent,
    LoopPost,
    OutboxMessage,
    Prompt,
)
from tests.harness import tick, tick_of

FRI_1500_UTC = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 16:00 in Berlin, 07:00 in LA
SAT_0000_UTC = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)  # 16:00 Friday in LA


def dms_to(slack, user_id):
    """Messages the bot sent to the user's DM (by user ID or by the D... channel)."""
    targets = {user_id, slack.dm_channel_id(user_id)}
    return [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] in targets]


def channel_posts(slack, channel="CMKTG", *, threaded=None):
    calls = [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] == channel]
    if threaded is not None:
        calls = [c for c in calls if bool(c.params.get("thread_ts")) == threaded]
    return calls


def stored(slack, call):
    """The message as Slack now stores it (after any chat.update)."""
    return slack.messages[call.response["channel"]][call.response["ts"]]


def count(h, model):
    with session_scope(h.rt.session_factory) as s:
        return s.scalar(select(func.count()).select_from(model))


def all_text(message) -> str:
    return json.dumps(message.get("blocks")) + message.get("text", "")


def test_full_weekly_loop_two_time_zones(harness):
    h, slack, clock = harness, harness.slack, harness.clock

    # Wednesday: nobody is due.
    tick(h.rt)
    assert dms_to(slack, "UANA") == [] and dms_to(slack, "UBEN") == []
    assert slack.calls_to("users.info"), "time zones are read from users.info"

    # Friday 16:00 in Berlin: Ana only. The job firing twice prompts nobody twice.
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1 and dms_to(slack, "UBEN") == []
    prompt_call = dms_to(slack, "UANA")[0]
    assert "What messaging worked" in all_text(prompt_call.params)

    # Friday 16:00 in Los Angeles: Ben.
    clock.set(SAT_0000_UTC)
    tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1 and len(dms_to(slack, "UBEN")) == 1

    # Ana answers through the modal, typing things that would ping people if reposted raw.
    dm = stored(slack, prompt_call)
    reply = h.click_button("UANA", dm, prompt_call.response["channel"], "feedback_open")
    assert reply.status == 200
    modal = slack.calls_to("views.open")[-1].params["view"]
    assert [b["block_id"] for b in modal["blocks"] if b["type"] == "input"] == [
        "worked",
        "fell_flat",
        "insight",
        "campaign",
    ]
    reply = h.submit(
        "UANA",
        modal,
        {
            "worked": "ROI calculator opener <!channel> & <@U999>",
            "fell_flat": "Security deck; <#C1> objection: we already have SSO",
            "insight": "Budgets moving to Q3",
            "campaign": "Q4 webinar",
        },
    )
    assert reply.status == 200 and reply.body == ""
    posts = channel_posts(slack, threaded=False)
    assert len(posts) == 1
    post_text = all_text(posts[0].params)
    assert "<!channel>" not in post_text and "<@U999>" not in post_text and "<#C1>" not in post_text
    assert "&lt;!channel&gt; &amp; &lt;@U999&gt;" in post_text
    assert "<@UANA>" in post_text  # attributed to the rep
    assert "Close the loop" in post_text
    # The DM now shows it was answered.
    assert "Answered" in stored(slack, prompt_call)["text"]

    # Answering again the same week edits: the channel post is updated, not duplicated.
    dm = stored(slack, prompt_call)
    h.click_button("UANA", dm, prompt_call.response["channel"], "feedback_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    prefilled = {
        b["block_id"]: b["element"].get("initial_value")
        for b in modal["blocks"]
        if b["type"] == "input"
    }
    assert prefilled["insight"] == "Budgets moving to Q3"
    h.submit("UANA", modal, {**prefilled, "insight": "Budgets moving to Q1 next year"})
    assert len(channel_posts(slack, threaded=False)) == 1
    assert "Q1 next year" in all_text(stored(slack, posts[0]))
    assert "edited" in all_text(stored(slack, posts[0]))
    assert count(h, FeedbackAnswer) == 1

    # Ben replies in the DM with three bullets instead.
    h.dm(
        "UBEN",
        '- Case study with numbers\n- Pricing page; "too expensive"\n- Competitor X cut prices',
    )
    assert len(channel_posts(slack, threaded=False)) == 2
    confirmation = dms_to(slack, "UBEN")[-1].params
    assert "sent to marketing" in all_text(confirmation)
    ben_post = channel_posts(slack, threaded=False)[1]

    # Mia reacts on Ana's post: recorded, thread reply, Ana told. A retry changes nothing.
    ana_post = posts[0]
    h.react("UMIA", "CMKTG", ana_post.response["ts"], "white_check_mark", event_id="EvREACT1")
    h.react(
        "UMIA",
        "CMKTG",
        ana_post.response["ts"],
        "white_check_mark",
        event_id="EvREACT1",
        retry_num=1,
    )
    thread = channel_posts(slack, threaded=True)
    assert len(thread) == 1 and thread[0].params["thread_ts"] == ana_post.response["ts"]
    assert any("acknowledged" in all_text(c.params) for c in dms_to(slack, "UANA"))
    # The same reaction delivered as a new event (remove and re-add) is not a second reply.
    h.react("UMIA", "CMKTG", ana_post.response["ts"], "white_check_mark")
    assert len(channel_posts(slack, threaded=True)) == 1
    assert "Loop closed by <@UMIA>" in all_text(stored(slack, ana_post))

    # The outsider's reaction and other emoji record nothing and post nothing.
    h.react("UOUT", "CMKTG", ben_post.response["ts"], "white_check_mark")
    h.react("UMIA", "CMKTG", ben_post.response["ts"], "thumbsup")
    assert len(channel_posts(slack, threaded=True)) == 1
    assert count(h, Acknowledgement) == 1

    # The outsider clicking Close the loop gets an ephemeral explanation and no modal.
    opened = len(slack.calls_to("views.open"))
    h.click_button("UOUT", stored(slack, ben_post), "CMKTG", "loop_close")
    assert len(slack.calls_to("views.open")) == opened
    ephemeral = slack.calls_to("chat.postEphemeral")[-1].params
    assert ephemeral["user"] == "UOUT" and "Only the marketing team" in ephemeral["text"]
    assert count(h, Acknowledgement) == 1

    # Mia clicks Close the loop on Ben's post and writes what marketing will change.
    h.click_button("UMIA", stored(slack, ben_post), "CMKTG", "loop_close")
    note_modal = slack.calls_to("views.open")[-1].params["view"]
    h.submit("UMIA", note_modal, {"note": "Pausing that campaign, shifting budget to <webinars>"})
    thread = channel_posts(slack, threaded=True)
    assert len(thread) == 2 and thread[1].params["thread_ts"] == ben_post.response["ts"]
    assert "shifting budget to &lt;webinars&gt;" in all_text(thread[1].params)
    told_ben = dms_to(slack, "UBEN")[-1].params
    assert "Pausing that campaign" in all_text(told_ben)
    with session_scope(h.rt.session_factory) as s:
        note_ack = s.scalars(select(Acknowledgement).where(Acknowledgement.via == "note")).one()
        assert (note_ack.user_id, note_ack.note) == (
            "UMIA",
            "Pausing that campaign, shifting budget to <webinars>",
        )
        assert (
            s.scalar(
                select(func.count()).select_from(LoopPost).where(LoopPost.first_ack_at.is_not(None))
            )
            == 2
        )

    assert slack.server_errors == []


def test_reminder_once_then_missed(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    first = dms_to(slack, "UANA")[0]
    # Monday 10:00 Berlin = 09:00 UTC: one reminder, however often the job runs.
    clock.set(datetime(2026, 11, 23, 8, 59, tzinfo=UTC))
    tick(h.rt)
    assert len(dms_to(slack, "UANA")) == 1
    clock.set(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    tick(h.rt)
    tick(h.rt)
    dms = dms_to(slack, "UANA")
    assert len(dms) == 2 and "Reminder" in dms[1].params["text"]
    # Next Friday: last week is recorded as missed, the DM says so, the new week is prompted.
    clock.set(datetime(2026, 11, 27, 15, 0, tzinfo=UTC))
    tick(h.rt)
    assert "missed" in stored(slack, first)["text"]
    with session_scope(h.rt.session_factory) as s:
        statuses = sorted(s.scalars(select(Prompt.status).where(Prompt.user_id == "UANA")))
    assert statuses == ["missed", "sent"]
    # Clicking the old prompt's button is refused with a message the rep can act on.
    h.click(
        "UANA",
        "feedback_skip_out",
        str(_prompt_id(h, "UANA", "missed")),
        channel=first.response["channel"],
        message_ts=first.response["ts"],
    )
    assert "missed" in dms_to(slack, "UANA")[-1].params["text"]


def _prompt_id(h, user_id, status):
    with session_scope(h.rt.session_factory) as s:
        return s.scalars(
            select(Prompt.id).where(Prompt.user_id == user_id, Prompt.status == status)
        ).one()


def test_skip_buttons_record_a_skip(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(SAT_0000_UTC)
    tick(h.rt)
    call = dms_to(slack, "UBEN")[0]
    h.click_button("UBEN", stored(slack, call), call.response["channel"], "feedback_skip_out")
    assert "Out this week" in stored(slack, call)["text"]
    assert channel_posts(slack) == []
    with session_scope(h.rt.session_factory) as s:
        prompt = s.scalars(select(Prompt).where(Prompt.user_id == "UBEN")).one()
        assert (prompt.status, prompt.skip_reason) == ("skipped", "out")


def test_new_group_members_are_picked_up_and_leavers_are_not_prompted(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    tick(h.rt)
    slack.add_user("UNEW", tz="Asia/Kolkata", name="new")
    slack.set_usergroup("SSALES", ["UBEN", "UNEW"])  # Ana left, a new rep joined
    clock.set(SAT_0000_UTC)
    tick_of(h.rt).roster.last = None  # the hourly roster refresh is due
    tick(h.rt)
    assert dms_to(slack, "UANA") == []
    assert len(dms_to(slack, "UNEW")) == 1 and len(dms_to(slack, "UBEN")) == 1


def test_ratelimited_and_server_errors_are_retried_once_each_delivered(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    slack.fail_next("chat.postMessage", error="ratelimited", retry_after=1)
    slack.fail_next("chat.postMessage", status=500)
    clock.set(SAT_0000_UTC)
    tick(h.rt)
    # Neither is retried before its time: Retry-After (1 s) for one, a second for Slack's 500
    assert len(dms_to(slack, "UANA")) + len(dms_to(slack, "UBEN")) == 0
    with session_scope(h.rt.session_factory) as s:
        waits = sorted(
            (m.not_before - clock()).total_seconds()
            for m in s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "prompt"))
        )
    assert waits == [pytest.approx(1.0), pytest.approx(1.0)]
    clock.advance(seconds=1)
    h.rt.outbox.drain()
    assert len(dms_to(slack, "UANA")) == 1 and len(dms_to(slack, "UBEN")) == 1
    to_reps = [
        c
        for c in slack.calls_to("chat.postMessage", include_failed=True)
        if c.params["channel"] in ("UANA", "UBEN")
    ]
    assert len(to_reps) == 4  # two faults + two deliveries


def test_channel_post_failure_is_told_and_retried(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    call = dms_to(slack, "UANA")[0]
    slack.add_channel("CMKTG", name="marketing-feedback", is_member=False)  # bot not invited
    h.dm("UANA", "- a\n- b\n- c")
    assert channel_posts(slack) == []
    assert "could not post it" in dms_to(slack, "UANA")[-1].params["text"]
    assert "Answered" in stored(slack, call)["text"]
    slack.add_channel("CMKTG", name="marketing-feedback", is_member=True)  # invited
    clock.advance(minutes=5)
    tick(h.rt)
    assert len(channel_posts(slack)) == 1


def test_dm_reply_that_is_not_three_bullets_gets_help(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    h.dm("UANA", "hello?")
    assert "no open feedback prompt" in dms_to(slack, "UANA")[-1].params["text"]
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    h.dm("UANA", "just one line")
    last = dms_to(slack, "UANA")[-1]
    assert "three bullets" in last.params["text"]
    assert count(h, FeedbackAnswer) == 0


def test_closeloop_is_acked_at_once_and_says_so_when_there_is_no_open_prompt(harness):
    """``/closeloop`` acks before any database work; the form opens after the ack, or, with
    no prompt open, the rep is told through the command's response_url (only they see it)."""
    h, slack, clock = harness, harness.slack, harness.clock
    reply = h.command("UANA")  # Wednesday: no prompt yet
    assert (reply.status, reply.body) == (200, "")
    answers = [c for c in slack.calls if c.method == "response_url"]
    assert len(answers) == 1 and answers[0].params["response_type"] == "ephemeral"
    assert "no open feedback prompt" in answers[0].params["text"]
    assert slack.calls_to("views.open") == []
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    reply = h.command("UANA")
    assert (reply.status, reply.body) == (200, "")
    modal = slack.calls_to("views.open")[-1].params["view"]
    assert modal["callback_id"] == "feedback_submit"
    assert len([c for c in slack.calls if c.method == "response_url"]) == 1


def test_modal_rejects_overlong_and_blank_fields_inline(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    h.command("UANA")
    modal = slack.calls_to("views.open")[-1].params["view"]
    reply = h.submit("UANA", modal, {"worked": "x" * 3001, "fell_flat": " ", "insight": "ok"})
    assert reply.status == 200
    body = reply.json()
    assert body["response_action"] == "errors"
    assert set(body["errors"]) == {"worked", "fell_flat"}
    assert count(h, FeedbackAnswer) == 0


def test_events_retry_processed_once(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    h.dm("UANA", "- a\n- b\n- c", event_id="EvONCE")
    h.dm("UANA", "- a\n- b\n- c", event_id="EvONCE", retry_num=1)
    h.dm("UANA", "- a\n- b\n- c", event_id="EvONCE", retry_num=2)
    assert len(channel_posts(slack)) == 1
    assert count(h, InboundEvent) == 1


def test_bad_signature_and_stale_timestamp_are_refused(harness):
    h = harness
    body = b'{"type":"event_callback","event_id":"EvBAD","event":{"type":"message"}}'
    assert h.request("/slack/events", body, secret="wrong").status == 401
    assert h.request("/slack/events", body, timestamp=int(time.time()) - 600).status == 401
    assert h.request("/slack/events", body, signed=False).status == 401
    assert count(h, InboundEvent) == 0
    assert h.request("/healthz", method="GET", signed=False).status == 200


def test_ack_does_not_wait_for_slow_slack(harness):
    """The click is acknowledged at once; the slow views.open happens after the ack."""
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    call = dms_to(slack, "UANA")[0]
    button = stored(slack, call)["blocks"][2]["elements"][0]
    assert button["action_id"] == "feedback_open"
    slack.fail_next("views.open", delay=2.5)
    started = time.monotonic()
    reply = h.click(
        "UANA",
        "feedback_open",
        button["value"],
        channel=call.response["channel"],
        message_ts=call.response["ts"],
        settle=False,
    )
    elapsed = time.monotonic() - started
    assert reply.status == 200 and elapsed < 1.5, elapsed
    h.settle()
    assert len(slack.calls_to("views.open")) == 1
