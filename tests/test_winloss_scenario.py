"""The win/loss path end to end: a signed CRM webhook, the owner's DM, the modal, the channel
post, marketing's acknowledgement, the reminder at hour 20 and the overdue escalation."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bot.db import session_scope
from bot.models import Deal, LoopPost, WinLossEntry, WinLossRevision
from tests.harness import tick
from tests.test_loop_scenario import all_text, dms_to, stored

SECRET = "deal-hook-secret"
CLOSED = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


@pytest.fixture
def settings_overrides():
    return {
        "WINLOSS_CHANNEL": "CWINLOSS",
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "DEALS_WEBHOOK_SECRET": SECRET,
        "SALES_MANAGERS": "UMGR",
    }


def deal(**changes):
    body = {
        "deal_id": "CRM-1",
        "name": "Acme renewal",
        "outcome": "LOST",
        "closed_at": "2026-11-20T14:00:00Z",
        "owner_email": "Ana@Example.com",
        "amount": 12000,
        "source": "Q4 webinar",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def posts_in(slack, channel, *, threaded=False):
    return [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.params["channel"] == channel and bool(c.params.get("thread_ts")) == threaded
    ]


def nudges_to(slack, user_id):
    """DMs asking ``user_id`` for a win/loss entry (not the weekly prompt)."""
    return [c for c in dms_to(slack, user_id) if "Log win/loss" in all_text(c.params)]


def count(h, model):
    with session_scope(h.rt.session_factory) as s:
        return s.scalar(select(func.count()).select_from(model))


def fill(modal, **values):
    """The modal's current values (initial ones) with ``values`` typed over them."""
    state = {}
    for block in modal["blocks"]:
        if block.get("type") != "input":
            continue
        element = block["element"]
        initial = element.get("initial_value") or element.get("initial_date")
        if "initial_option" in element:
            initial = element["initial_option"]["value"]
        state[block["block_id"]] = initial
    state.update(values)
    return state


def submit_winloss(h, user_id, modal, values):
    """Submit the win/loss modal: selects, datepicker and number input as Slack sends them."""
    from tests.harness import sample

    payload = sample("view_submission.bolt_python_test.json")
    payload["trigger_id"] = h.slack.new_trigger_id()
    payload["user"] = {"id": user_id, "username": user_id.lower(), "team_id": "T111"}
    view = dict(payload["view"])
    view.update(
        blocks=modal["blocks"],
        callback_id=modal["callback_id"],
        private_metadata=modal["private_metadata"],
        title=modal["title"],
    )
    state = {}
    for block in modal["blocks"]:
        if block.get("type") != "input":
            continue
        element, block_id = block["element"], block["block_id"]
        value = values.get(block_id)
        kind = element["type"]
        if kind == "static_select":
            option = next((o for o in element["options"] if o["value"] == value), None)
            state[block_id] = {element["action_id"]: {"type": kind, "selected_option": option}}
        elif kind == "datepicker":
            state[block_id] = {element["action_id"]: {"type": kind, "selected_date": value}}
        else:
            state[block_id] = {element["action_id"]: {"type": kind, "value": value}}
    view["state"] = {"values": state}
    payload["view"] = view
    return h.interactive(payload)


QUOTE = "Honestly <!channel>, your tool is great but we can't justify a second license & training"


def test_webhook_to_dm_modal_post_ack_and_edit(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED + timedelta(hours=1))

    reply = h.deal_closed(deal())
    assert reply.status == 201, reply.body
    assert reply.json() == {"ok": True, "deal_id": "CRM-1", "duplicate": False}
    assert slack.calls_to("users.lookupByEmail")[0].params["email"] == "ana@example.com"
    (nudge,) = dms_to(slack, "UANA")
    assert "Acme renewal" in all_text(nudge.params) and "Log win/loss" in all_text(nudge.params)

    # The same deal again is one deal, and nobody is nudged twice.
    again = h.deal_closed(deal(outcome="lost"))
    assert again.status == 200 and again.json()["duplicate"] is True
    assert count(h, Deal) == 1 and len(dms_to(slack, "UANA")) == 1

    # The button opens the modal prefilled from the CRM.
    h.click_button("UANA", stored(slack, nudge), nudge.response["channel"], "winloss_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    values = fill(modal)
    assert values["deal_name"] == "Acme renewal" and values["outcome"] == "lost"
    assert values["closed_on"] == "2026-11-20" and values["amount"] == "12000.00"

    # Shorthand is refused inline, and nothing is stored.
    for shorthand in ("poor fit", "price", "timing", "too expensive overall"):
        refused = submit_winloss(
            h,
            "UANA",
            modal,
            fill(modal, reason=shorthand, reason_category="Price", insight="Lead with ROI"),
        )
        assert refused.json()["response_action"] == "errors"
        assert "customer actually said" in refused.json()["errors"]["reason"]
    assert count(h, WinLossEntry) == 0

    accepted = submit_winloss(
        h,
        "UANA",
        modal,
        fill(
            modal,
            reason=QUOTE,
            reason_category="Price",
            competitor_new="Competitor-X ",
            insight="Show the license consolidation story earlier <@U1>",
        ),
    )
    assert accepted.status == 200 and accepted.body == ""
    (post,) = posts_in(slack, "CWINLOSS")
    text = all_text(post.params)
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text and "<@U1>" not in text
    assert "Competitor-X" in text and "on time" in text and "<@UANA>" in text
    assert "Close the loop" in text and "Edit" in text
    assert "Logged" in stored(slack, nudge)["text"]  # the nudge DM shows it is done

    # Marketing closes the loop by reaction: thread reply, the rep is told.
    h.react("UMIA", "CWINLOSS", post.response["ts"], "white_check_mark")
    (thread,) = posts_in(slack, "CWINLOSS", threaded=True)
    assert thread.params["thread_ts"] == post.response["ts"]
    told = dms_to(slack, "UANA")[-1]
    assert "win/loss entry for Acme renewal" in all_text(told.params)

    # The author edits from the post; the previous text is kept.
    h.click_button("UANA", stored(slack, post), "CWINLOSS", "winloss_edit")
    edit_modal = slack.calls_to("views.open")[-1].params["view"]
    values = fill(edit_modal)
    assert values["reason"] == QUOTE and values["competitor"] == "Competitor-X"
    submit_winloss(
        h,
        "UANA",
        edit_modal,
        fill(edit_modal, reason="We can't justify a second license and the training it needs"),
    )
    assert len(posts_in(slack, "CWINLOSS")) == 1
    assert "edited" in all_text(stored(slack, post))
    with session_scope(h.rt.session_factory) as s:
        (revision,) = s.scalars(select(WinLossRevision)).all()
        assert revision.reason == QUOTE
        assert s.scalars(select(WinLossEntry.reason)).one().startswith("We can't justify")

    # Someone else may not edit; nobody may after 7 days.
    h.click_button("UOUT", stored(slack, post), "CWINLOSS", "winloss_edit")
    assert "author or a sales manager" in slack.calls_to("chat.postEphemeral")[-1].params["text"]
    clock.advance(days=8)
    opened = len(slack.calls_to("views.open"))
    h.click_button("UANA", stored(slack, post), "CWINLOSS", "winloss_edit")
    assert len(slack.calls_to("views.open")) == opened
    assert "7 days" in slack.calls_to("chat.postEphemeral")[-1].params["text"]


def test_reminder_at_hour_20_and_overdue_at_24(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED + timedelta(minutes=5))
    assert h.deal_closed(deal(owner_email=None, owner_slack_id="UBEN")).status == 201
    assert len(nudges_to(slack, "UBEN")) == 1
    clock.set(CLOSED + timedelta(hours=19, minutes=59))
    tick(h.rt)
    assert len(nudges_to(slack, "UBEN")) == 1
    clock.set(CLOSED + timedelta(hours=20))
    tick(h.rt)
    tick(h.rt)
    dms = nudges_to(slack, "UBEN")
    assert len(dms) == 2 and "Reminder" in dms[1].params["text"]
    assert posts_in(slack, "CMGR") == []
    clock.set(CLOSED + timedelta(hours=24))
    tick(h.rt)
    tick(h.rt)
    (escalation,) = posts_in(slack, "CMGR")
    # named, not pinged, in the managers' channel (issue 13); the name from the roster
    assert "<@" not in escalation.params["text"] and "Acme renewal" in escalation.params["text"]
    assert "Owner: ben." in escalation.params["text"]
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Deal.overdue_at)).one() is not None

    # Logging late is accepted and recorded as late, not hidden.
    clock.set(CLOSED + timedelta(hours=30))
    h.click_button("UBEN", stored(slack, dms[0]), dms[0].response["channel"], "winloss_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    submit_winloss(
        h,
        "UBEN",
        modal,
        fill(
            modal,
            reason="They told us the board froze all new tooling spend until March",
            reason_category="Timing or budget",
            competitor="__none__",
            insight="Budget timing",
        ),
    )
    (post,) = posts_in(slack, "CWINLOSS")
    assert "late by 6 h" in all_text(post.params)
    with session_scope(h.rt.session_factory) as s:
        entry = s.scalars(select(WinLossEntry)).one()
        assert entry.on_time is False and entry.competitor_id is None


def test_owner_not_in_slack_is_reported_and_the_deal_kept(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED)
    assert h.deal_closed(deal(owner_email="gone@example.com")).status == 201
    (report,) = posts_in(slack, "CMGR")
    assert "gone@example.com" in report.params["text"]
    tick(h.rt)
    assert len(posts_in(slack, "CMGR")) == 1
    assert count(h, Deal) == 1
    # A sales manager sees it in /winloss list and may log it.
    listing = h.command("UMGR", "list", command="/winloss").json()
    assert "Acme renewal" in json.dumps(listing)
    assert "Acme renewal" not in json.dumps(h.command("UANA", "list", command="/winloss").json())


BAD_BODIES = [
    (b"{not json", "body"),
    (b"[]", "body"),
    (json.dumps(deal(deal_id=None)).encode(), "deal_id"),
    (json.dumps(deal(name=None)).encode(), "name"),
    (json.dumps(deal(outcome=None)).encode(), "outcome"),
    (json.dumps(deal(outcome="maybe")).encode(), "outcome"),
    (json.dumps(deal(closed_at=None)).encode(), "closed_at"),
    (json.dumps(deal(closed_at="yesterday")).encode(), "closed_at"),
    (json.dumps(deal(owner_email=None)).encode(), "owner_email"),
    (json.dumps(deal(owner_email="not-an-email")).encode(), "owner_email"),
    (json.dumps(deal(owner_email=None, owner_slack_id="bob")).encode(), "owner_slack_id"),
    (json.dumps(deal(amount="lots")).encode(), "amount"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_malformed_deals_get_400_naming_the_field_and_store_nothing(harness, body, field):
    reply = harness.deal_closed(body)
    assert reply.status == 400
    assert reply.json()["field"] == field and field in reply.json()["error"]
    assert count(harness, Deal) == 0
    assert harness.slack.calls_to("chat.postMessage") == []


def test_bad_signatures_get_401_and_store_nothing(harness):
    h = harness
    now = int(h.clock().timestamp())
    assert h.deal_closed(deal(), signed=False).status == 401
    assert h.deal_closed(deal(), secret="wrong-secret").status == 401
    assert h.deal_closed(deal(), signature="v0=" + "0" * 64).status == 401
    assert h.deal_closed(deal(), timestamp=now - 301).status == 401
    assert h.deal_closed(deal(), timestamp=now + 301).status == 401
    body = json.dumps(deal()).encode()
    from tests.harness import sign

    tampered = h.request(
        "/hooks/deal-closed",
        body.replace(b"LOST", b"WON"),
        signed=False,
        headers={
            "X-Closeloop-Request-Timestamp": str(now),
            "X-Closeloop-Signature": sign(body, now, SECRET),
        },
    )
    assert tampered.status == 401
    assert count(h, Deal) == 0
    assert h.deal_closed(deal(), timestamp=now - 299).status == 201


def test_winloss_command_help_list_and_a_deal_the_bot_never_heard_of(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED)
    help_reply = h.command("UANA", "help", command="/winloss")
    assert help_reply.status == 200 and "/winloss list" in help_reply.body  # ephemeral text
    empty = h.command("UANA", "list", command="/winloss").json()
    assert "Nothing waiting" in empty["text"]
    h.command("UANA", "", command="/winloss")
    modal = slack.calls_to("views.open")[-1].params["view"]
    values = fill(modal)
    assert values["deal_name"] in (None, "") and values["closed_on"] == "2026-11-20"
    submit_winloss(
        h,
        "UANA",
        modal,
        fill(
            modal,
            deal_name="Globex pilot",
            outcome="won",
            closed_on="2026-11-19",
            reason="Their CFO said the live ROI calculator made the decision easy for her",
            reason_category="Other",
            competitor_new="Initech",
            insight="Demo the ROI calculator",
        ),
    )
    with session_scope(h.rt.session_factory) as s:
        d = s.scalars(select(Deal)).one()
        assert (d.external_id, d.origin, d.name, d.owner_user_id) == (
            None,
            "slack",
            "Globex pilot",
            "UANA",
        )
        # Ana is in Berlin: the 19th starts at 23:00 UTC on the 18th
        assert d.closed_at == datetime(2026, 11, 18, 23, 0, tzinfo=UTC)
        assert s.scalars(select(WinLossEntry.on_time)).one() is True
        assert s.scalars(select(LoopPost.kind)).one() == "winloss"
    (post,) = posts_in(slack, "CWINLOSS")
    assert "Globex pilot" in all_text(post.params) and "Won" in all_text(post.params)


def test_reminder_and_escalation_survive_a_slack_failure(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED)
    h.deal_closed(deal(owner_email=None, owner_slack_id="UBEN"))
    clock.set(CLOSED + timedelta(hours=20))
    # Every post fails while this tick runs: the reminder, and the reps' weekly prompts that
    # fall due at the same minute.
    slack.inject_faults("chat.postMessage", fraction=1.0, statuses=(500,))
    tick(h.rt)
    slack.clear_faults()
    assert len(nudges_to(slack, "UBEN")) == 1
    tick(h.rt)
    assert len(nudges_to(slack, "UBEN")) == 1  # the outbox backs off before retrying
    clock.advance(minutes=1)
    tick(h.rt)
    assert len(nudges_to(slack, "UBEN")) == 2  # the reminder, once
    clock.set(CLOSED + timedelta(hours=24))
    slack.add_channel("CMGR", name="sales-managers", is_member=False)
    tick(h.rt)
    assert posts_in(slack, "CMGR") == []
    slack.add_channel("CMGR", name="sales-managers", is_member=True)  # an admin invites it
    clock.advance(minutes=1)  # past the backoff
    tick(h.rt)
    tick(h.rt)
    assert len(posts_in(slack, "CMGR")) == 1


def test_a_nudge_whose_answer_was_lost_is_not_sent_twice(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED)
    slack.fail_next("chat.postMessage", delay=4.0)  # Slack stores it; the client times out
    h.deal_closed(deal())
    deadline = time.monotonic() + 15
    while not nudges_to(slack, "UANA") and time.monotonic() < deadline:
        time.sleep(0.05)
    clock.advance(minutes=3)
    tick(h.rt)
    tick(h.rt)
    assert len(nudges_to(slack, "UANA")) == 1
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Deal.nudge_ts)).one() == nudges_to(slack, "UANA")[0].response["ts"]


def test_an_unknown_owner_id_is_reported_at_once_and_a_manager_logs_it(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED)
    h.deal_closed(deal(owner_email=None, owner_slack_id="UGONE"))
    (report,) = posts_in(slack, "CMGR")
    assert "UGONE" in report.params["text"]
    listing = h.command("UMGR", "list", command="/winloss").json()
    assert "Acme renewal" in json.dumps(listing)
    h.click_button("UMGR", stored(slack, report), "CMGR", "winloss_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    submit_winloss(
        h,
        "UMGR",
        modal,
        fill(
            modal,
            reason="Their champion told us the budget moved to the data team this year",
            reason_category="Timing or budget",
            insight="Find a second sponsor earlier",
        ),
    )
    with session_scope(h.rt.session_factory) as s:
        entry = s.scalars(select(WinLossEntry)).one()
        assert entry.author_user_id == "UMGR" and entry.deal.external_id == "CRM-1"


def test_a_manager_logs_an_overdue_deal_from_the_escalation(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED)
    h.deal_closed(deal())
    clock.set(CLOSED + timedelta(hours=25))
    tick(h.rt)
    (escalation,) = posts_in(slack, "CMGR")
    h.click_button("UOUT", stored(slack, escalation), "CMGR", "winloss_open")
    assert "owner or a sales manager" in slack.calls_to("chat.postEphemeral")[-1].params["text"]
    h.click_button("UMGR", stored(slack, escalation), "CMGR", "winloss_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    assert fill(modal)["deal_name"] == "Acme renewal"


def test_modal_refuses_bad_input_inline_and_stores_nothing(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED)
    h.deal_closed(deal())
    nudge = nudges_to(slack, "UANA")[0]
    h.click_button("UANA", stored(slack, nudge), nudge.response["channel"], "winloss_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    good = fill(modal, reason=QUOTE, reason_category="Price", insight="Lead with ROI")
    cases = [
        ({"outcome": None}, "outcome"),
        ({"reason_category": None}, "reason_category"),
        ({"closed_on": "2026-12-25"}, "closed_on"),
        ({"insight": " "}, "insight"),
        ({"deal_name": ""}, "deal_name"),
    ]
    for change, block in cases:
        reply = submit_winloss(h, "UANA", modal, {**good, **change})
        body = reply.json()
        assert body.get("response_action") == "errors" and block in body["errors"], (change, body)
    # Someone who is neither the owner nor a manager cannot log it, even with a forged submit.
    forged = submit_winloss(h, "UOUT", modal, good).json()
    assert "owner or a sales manager" in forged["errors"]["reason"]
    assert count(h, WinLossEntry) == 0


def test_marketing_writes_what_it_will_change_on_a_winloss_post(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED)
    h.deal_closed(deal())
    nudge = nudges_to(slack, "UANA")[0]
    h.click_button("UANA", stored(slack, nudge), nudge.response["channel"], "winloss_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    submit_winloss(
        h,
        "UANA",
        modal,
        fill(modal, reason=QUOTE, reason_category="Price", insight="Lead with ROI"),
    )
    (post,) = posts_in(slack, "CWINLOSS")
    h.click_button("UMIA", stored(slack, post), "CWINLOSS", "loop_close")
    note_modal = slack.calls_to("views.open")[-1].params["view"]
    h.submit("UMIA", note_modal, {"note": "New consolidation one-pager for the Q1 campaign"})
    (thread,) = posts_in(slack, "CWINLOSS", threaded=True)
    assert "consolidation one-pager" in all_text(thread.params)
    told = dms_to(slack, "UANA")[-1]
    assert "win/loss entry for Acme renewal" in all_text(told.params)
    assert "consolidation one-pager" in all_text(told.params)


def test_a_crm_deal_exports_and_imports_back_unchanged(harness, tmp_path):
    from bot.services import csvio

    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED)
    h.deal_closed(deal())  # owner given by email, resolved to UANA
    nudge = nudges_to(slack, "UANA")[0]
    h.click_button("UANA", stored(slack, nudge), nudge.response["channel"], "winloss_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    submit_winloss(
        h,
        "UANA",
        modal,
        fill(
            modal,
            reason=QUOTE,
            reason_category="Price",
            competitor_new="Competitor X",
            insight="Lead with ROI",
        ),
    )
    out = io.StringIO()
    with session_scope(h.rt.session_factory) as s:
        csvio.write_csv(out, csvio.WINLOSS_COLUMNS, csvio.winloss_rows(s))
    out.seek(0)
    rows, rejected = csvio.read_winloss(out, categories=h.settings.reason_categories)
    assert rejected == []
    with session_scope(h.rt.session_factory) as s:
        result = csvio.import_winloss(s, rows, deadline_hours=24, now=clock())
        assert (result.new, result.updated, result.unchanged) == (0, 0, 1)
        deal_row = s.scalars(select(Deal)).one()
        assert (deal_row.owner_user_id, deal_row.owner_email) == ("UANA", "ana@example.com")


def test_the_generic_hook_takes_the_crm_reason_as_a_note_never_as_the_reason(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    clock.set(CLOSED + timedelta(hours=1))
    assert h.deal_closed(deal(crm_reason="Price <!here>")).status == 201
    (nudge,) = dms_to(slack, "UANA")
    h.click_button("UANA", stored(slack, nudge), nudge.response["channel"], "winloss_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    (note,) = [b for b in modal["blocks"] if b.get("block_id") == "crm_note"]
    assert "Price &lt;!here&gt;" in json.dumps(note) and not fill(modal).get("reason")
    too_long = h.deal_closed(deal(deal_id="CRM-2", crm_reason="x" * 1001))
    assert too_long.status == 400 and too_long.json()["field"] == "crm_reason"


def test_a_database_that_cannot_store_the_deal_is_503_so_the_crm_retries(harness, monkeypatch):
    from sqlalchemy.exc import OperationalError

    import bot.listeners.crm_webhook as hook

    h = harness
    h.clock.set(CLOSED + timedelta(hours=1))
    real = hook.receive_deal

    def down(*args, **kwargs):
        raise OperationalError("INSERT INTO deals", {}, Exception("database is locked"))

    monkeypatch.setattr(hook, "receive_deal", down)
    refused = h.deal_closed(deal())
    assert refused.status == 503 and "try again" in refused.json()["error"]
    assert count(h, Deal) == 0
    monkeypatch.setattr(hook, "receive_deal", real)
    assert h.deal_closed(deal()).status == 201  # the CRM's retry
    assert count(h, Deal) == 1 and len(nudges_to(h.slack, "UANA")) == 1
