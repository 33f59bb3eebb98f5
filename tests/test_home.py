"""The Home tab through app_home_opened and the fake Slack's views.publish."""

from __future__ import annotations

import json

from tests.harness import sample, tick
from tests.test_loop_scenario import FRI_1500_UTC, channel_posts, dms_to, stored


def open_home(h, user_id):
    event = {
        "type": "app_home_opened",
        "user": user_id,
        "channel": "D1",
        "tab": "home",
        "event_ts": "1.1",
    }
    return h.event(event, sample_name="message_im.slack_docs.json")


def home_of(slack, user_id) -> str:
    view = slack.home_views[user_id]
    assert view["type"] == "home"
    return json.dumps(view["blocks"])


def publishes_to(slack, user_id):
    return [c for c in slack.calls_to("views.publish") if c.params["user_id"] == user_id]


def test_rep_home_shows_the_prompt_and_follows_changes(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    open_home(h, "UANA")
    assert "No prompt yet" in home_of(slack, "UANA")
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    open_home(h, "UANA")
    home = home_of(slack, "UANA")
    assert "Waiting for your three bullets" in home and "feedback_open" in home
    h.dm("UANA", "- a\n- b\n- c")  # a change: the Home tab is refreshed without reopening
    assert "Answered for the week of Nov 16" in home_of(slack, "UANA")
    assert "waiting for marketing" in home_of(slack, "UANA")
    # Ben never opened his Home tab: changes do not publish one for him.
    tick(h.rt)
    assert publishes_to(slack, "UBEN") == []


def test_imported_entries_do_not_wait_for_marketing_on_the_home_tab(harness):
    """History loaded with `closeloop import` was never posted, so nobody can close its loop:
    the rep's Home tab says it was imported instead of "waiting for marketing" forever."""
    import io

    from bot.db import session_scope
    from bot.services import csvio

    h, slack = harness, harness.slack
    exported = (
        "deal_id,deal_name,outcome,closed_at,logged_at,reason,reason_category,competitor,"
        "insight,amount,source,owner\n"
        "CRM-9,Hooli,lost,2026-10-01T14:00:00Z,2026-10-01T20:00:00Z,Too pricey for them,"
        "Price,,,,,UANA\n"
    )
    rows, rejected = csvio.read_winloss(
        io.StringIO(exported), categories=h.rt.settings.reason_categories
    )
    assert rejected == []
    with session_scope(h.rt.session_factory) as s:
        csvio.import_winloss(s, rows, deadline_hours=24, now=h.clock())
    open_home(h, "UANA")
    home = home_of(slack, "UANA")
    assert "Lost: Hooli" in home
    assert "imported, not posted to marketing" in home and "waiting for marketing" not in home


def test_marketing_home_lists_open_loops_oldest_first_and_clears_them(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    h.dm("UANA", "- a\n- b\n- c")
    clock.advance(hours=10)
    tick(h.rt)
    h.dm("UBEN", "- d\n- e\n- f")
    open_home(h, "UMIA")
    home = home_of(slack, "UMIA")
    assert home.index("<@UANA>") < home.index("<@UBEN>")  # oldest first
    assert home.count("loop_close") == 2
    assert "so far" in home and "Win rate" in home
    (ana_post, _ben) = channel_posts(slack, threaded=False)
    h.react("UMIA", "CMKTG", ana_post.response["ts"], "white_check_mark")
    home = home_of(slack, "UMIA")
    assert home.count("loop_close") == 1 and "<@UANA>" not in home


def test_someone_in_neither_team_gets_an_explanation(harness):
    open_home(harness, "UOUT")
    assert "You are in neither team" in home_of(harness.slack, "UOUT")


def test_close_the_loop_from_the_home_tab_by_an_outsider_is_explained_privately(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    h.dm("UANA", "- a\n- b\n- c")
    payload = sample("block_actions_button.bolt_python_test.json")
    payload["user"] = {"id": "UOUT", "username": "out", "team_id": "T111"}
    payload["container"] = {"type": "view", "view_id": "V1"}
    payload.pop("channel")
    payload["trigger_id"] = slack.new_trigger_id()
    payload["actions"][0].update(action_id="loop_close", value="1")
    assert h.interactive(payload).status == 200
    assert slack.calls_to("views.open") == []
    assert "Only the marketing team" in dms_to(slack, "UOUT")[-1].params["text"]


def test_answer_button_in_the_home_tab_opens_the_form(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    open_home(h, "UANA")
    view = slack.home_views["UANA"]
    button = next(
        e
        for b in view["blocks"]
        for e in b.get("elements", [])
        if e.get("action_id") == "feedback_open"
    )
    call = dms_to(slack, "UANA")[0]
    h.click(
        "UANA",
        "feedback_open",
        button["value"],
        channel=call.response["channel"],
        message_ts=stored(slack, call)["ts"],
    )
    assert slack.calls_to("views.open")[-1].params["view"]["callback_id"] == "feedback_submit"
