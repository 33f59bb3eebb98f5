"""Each CRM adapter end to end, driven the way the CRM and Slack drive it.

The CRM's signed or authenticated request -> the real WSGI server -> the owner's DM nudge in
the fake Slack -> the owner opens the /winloss modal from that DM (its button, or
``/winloss list`` typed in the DM and its "Log it") with the click's trigger_id -> the CRM's
reason is a note, not the answer -> the owner submits the customer's words -> the entry is
posted to the win/loss channel, stored once, and the nudge DM shows it is done. The CRM's
delivery replayed afterwards sends nothing and changes nothing.

Where write-back is configured (HubSpot, Pipedrive: the default here), the CRM's deal has
received exactly one write by the end, with the customer's words as typed and the category;
with it off, none; a Salesforce or generic-webhook deal is never written back.
"""

from __future__ import annotations

import copy
import json
import urllib.parse
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.models import Deal, WinLossEntry
from tests import test_hubspot as hs
from tests import test_pipedrive as pd
from tests import test_salesforce as sf
from tests import test_winloss_scenario as generic
from tests.fakehubspot import FakeHubSpot
from tests.fakepipedrive import FakePipedrive
from tests.harness import sample, tick
from tests.test_loop_scenario import all_text, dms_to, stored
from tests.test_winloss_scenario import count, fill, nudges_to, posts_in, submit_winloss

# The customer's words, with what Slack would otherwise turn into markup or a ping.
QUOTE = "We can't justify a second licence & the training <!channel> asked for, said their CFO"
QUOTE_IN_SLACK = (
    "We can't justify a second licence &amp; the training &lt;!channel&gt; asked for, said "
    "their CFO"
)


@pytest.fixture
def fake_hubspot():
    from bot.intake import hubspot_api

    hubspot_api._stages.clear()  # a port may come round again: no pipelines of an old fake
    fake = FakeHubSpot(token=hs.HS_TOKEN)
    fake.start()
    fake.add_owner("42", "ana@example.com")  # HubSpot holds no deal until a test sets one
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_pipedrive():
    fake = FakePipedrive(token=pd.PD_TOKEN)
    fake.start()
    fake.add_user("42", "ana@example.com")
    try:
        yield fake
    finally:
        fake.stop()


HS_WORDS, HS_CATEGORY = "closeloop_customer_words", "closeloop_category"
# Custom fields' keys, as in tests/crm_samples/pipedrive/deal_fields.json
PD_WORDS, PD_CATEGORY = (
    "dcf558aac1ae4e8c4f849ba5e668430d8df9be12",
    "5ea8bbb8d4a2a4a0d0e8c1f0b6a7e2f3c4d5e6f7",
)


@pytest.fixture
def writeback() -> bool:
    """Write-back to HubSpot and Pipedrive configured (a test parametrizes it off)."""
    return True


@pytest.fixture
def settings_overrides(fake_hubspot, fake_pipedrive, writeback):
    """Every adapter on at once, as an installation using all of them would be."""
    fake_hubspot.add_property(HS_WORDS)
    fake_hubspot.add_property(HS_CATEGORY, field_type="text")
    more = {}
    if writeback:
        more = {
            "HUBSPOT_WRITEBACK_REASON_PROPERTY": HS_WORDS,
            "HUBSPOT_WRITEBACK_CATEGORY_PROPERTY": HS_CATEGORY,
            "PIPEDRIVE_WRITEBACK_REASON_FIELD": PD_WORDS,
            "PIPEDRIVE_WRITEBACK_CATEGORY_FIELD": PD_CATEGORY,
        }
    return {
        **more,
        "WINLOSS_CHANNEL": "CWINLOSS",
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "SALES_MANAGERS": "UMGR",
        "DEALS_WEBHOOK_SECRET": generic.SECRET,
        "HUBSPOT_CLIENT_SECRET": hs.CLIENT_SECRET,
        "HUBSPOT_ACCESS_TOKEN": hs.HS_TOKEN,
        "HUBSPOT_API_URL": fake_hubspot.url,
        "SALESFORCE_ORG_ID": sf.ORG_15,
        "SALESFORCE_WEBHOOK_SECRET": sf.SECRET,
        "PIPEDRIVE_WEBHOOK_USER": pd.USER,
        "PIPEDRIVE_WEBHOOK_PASSWORD": pd.PASSWORD,
        "PIPEDRIVE_API_TOKEN": pd.PD_TOKEN,
        "PIPEDRIVE_API_URL": fake_pipedrive.url + "/api/v1",
    }


# --- what Slack sends -----------------------------------------------------------------------


def click(h, user_id: str, *, channel: str, message_ts: str | None, value: str) -> str:
    """The owner clicks a "Log win/loss" / "Log it" button (block_actions, signed); returns
    the click's trigger_id. ``message_ts`` None: the button is on an ephemeral message."""
    payload = sample("block_actions_button.bolt_python_test.json")
    trigger_id = h.slack.new_trigger_id()
    payload["user"] = {"id": user_id, "username": user_id.lower(), "team_id": "T111"}
    payload["container"] = {
        "type": "message",
        "message_ts": message_ts or "1700000000.000100",
        "channel_id": channel,
        "is_ephemeral": message_ts is None,
    }
    payload["channel"] = {"id": channel, "name": "directmessage"}
    payload["trigger_id"] = trigger_id
    payload["response_url"] = h.slack.new_response_url()
    if message_ts is None:
        payload.pop("message", None)
    else:
        payload["message"] = {"ts": message_ts, "type": "message"}
    payload["actions"][0].update(action_id="winloss_open", value=value, block_id="b")
    reply = h.interactive(payload)
    assert reply.status == 200, reply.body
    return trigger_id


def button_value(message: dict, action_id: str = "winloss_open") -> str:
    for block in message.get("blocks") or []:
        for element in block.get("elements") or [block.get("accessory") or {}]:
            if element.get("action_id") == action_id:
                return element["value"]
    raise AssertionError(f"no {action_id} button in {message}")


def winloss_list_in_dm(h, user_id: str) -> dict:
    """``/winloss list`` typed in the owner's DM with the bot, as Slack sends the command."""
    fields = sample("slash_command.bolt_python_test.decoded.json")
    fields.update(
        user_id=user_id,
        text="list",
        command="/winloss",
        trigger_id=h.slack.new_trigger_id(),
        response_url=h.slack.new_response_url(),
        channel_id=h.slack.dm_channel_id(user_id),
        channel_name="directmessage",
    )
    body = urllib.parse.urlencode(fields).encode()
    reply = h.request("/slack/events", body, content_type="application/x-www-form-urlencoded")
    assert reply.status == 200, reply.body
    return reply.json()


def open_from_dm(h, nudge, *, via: str) -> dict:
    """The owner opens the win/loss modal from the nudge DM; the modal Slack was asked to open
    (with the trigger_id of that very click)."""
    slack = h.slack
    dm = nudge.response["channel"]
    assert dm == slack.dm_channel_id("UANA")
    opened = len(slack.calls_to("views.open"))
    message = stored(slack, nudge)
    deal_pk = button_value(message)
    if via == "button":
        trigger_id = click(h, "UANA", channel=dm, message_ts=message["ts"], value=deal_pk)
    else:  # only the owner sees the list (ephemeral), and its "Log it" is the same deal's
        listing = winloss_list_in_dm(h, "UANA")
        assert listing.get("response_type") != "in_channel"
        assert "Acme renewal" in json.dumps(listing) and button_value(listing) == deal_pk
        trigger_id = click(h, "UANA", channel=dm, message_ts=None, value=deal_pk)
    calls = slack.calls_to("views.open")
    assert len(calls) == opened + 1
    assert calls[-1].params["trigger_id"] == trigger_id
    return calls[-1].params["view"]


# --- the scenario, after the CRM's request ---------------------------------------------------


def entry_state(h) -> tuple:
    with session_scope(h.rt.session_factory) as s:
        entry = s.scalars(select(WinLossEntry)).one()
        deal = entry.deal
        return (
            entry.id,
            entry.reason,
            entry.outcome,
            entry.reason_category,
            entry.insight,
            entry.edit_count,
            entry.logged_at,
            deal.id,
            deal.external_id,
            deal.name,
            deal.outcome,
            deal.crm_reason,
            str(deal.amount),
        )


def owner_logs_it(h, *, external_id: str, crm_reason: str | None, via: str) -> dict:
    """From the owner's nudge to the posted entry; returns the nudge call."""
    slack = h.slack
    (nudge,) = nudges_to(slack, "UANA")
    assert "Acme renewal" in all_text(nudge.params)

    modal = open_from_dm(h, nudge, via=via)
    # The CRM's reason is a note beside the field, never the answer (the generic webhook
    # carries no reason: no note).
    notes = [b for b in modal["blocks"] if b.get("block_id") == "crm_note"]
    if crm_reason is None:
        assert notes == []
    else:
        (note,) = notes
        assert note["type"] == "context" and crm_reason in json.dumps(note)
    values = fill(modal)
    assert values["reason"] is None
    assert values["deal_name"] == "Acme renewal" and values["outcome"] == "lost"

    accepted = submit_winloss(
        h,
        "UANA",
        modal,
        fill(modal, reason=QUOTE, reason_category="Price", insight="Lead with consolidation"),
    )
    assert accepted.status == 200 and accepted.body == "", accepted.body

    # Posted to the win/loss channel once: the customer's words escaped, the deal, its outcome.
    (post,) = posts_in(slack, "CWINLOSS")
    text = all_text(post.params)
    assert QUOTE_IN_SLACK in text and "<!channel>" not in text
    assert "Lost: Acme renewal" in post.params["text"]
    assert "Lost: Acme renewal" in json.dumps(post.params["blocks"])
    assert "<@UANA>" in text and "on time" in text

    # Stored once, on the CRM's deal.
    assert count(h, Deal) == 1 and count(h, WinLossEntry) == 1
    with session_scope(h.rt.session_factory) as s:
        entry = s.scalars(select(WinLossEntry)).one()
        assert entry.reason == QUOTE and entry.author_user_id == "UANA"
        assert entry.deal.external_id == external_id and entry.deal.origin == "crm"

    # The nudge DM now says it is done, and offers no button.
    done = stored(slack, nudge)
    assert "Logged" in done["text"] and "Acme renewal" in done["text"]
    assert "winloss_open" not in json.dumps(done.get("blocks"))
    return nudge


def nothing_more_happens(h, before: tuple, *, messages: int, updates: int) -> None:
    """After the CRM's replay: no DM, no post, no edit, the entry as it was; and past the
    deal's deadline the scheduler neither reminds the owner nor escalates it."""
    slack = h.slack
    assert len(nudges_to(slack, "UANA")) == 1
    assert len(dms_to(slack, "UANA")) == 1
    assert len(slack.calls_to("chat.postMessage")) == messages
    assert len(slack.calls_to("chat.update")) == updates
    assert entry_state(h) == before
    assert count(h, Deal) == 1 and count(h, WinLossEntry) == 1
    with session_scope(h.rt.session_factory) as s:
        deadline = s.scalars(select(Deal.deadline_at)).one()
    h.clock.set(deadline + timedelta(hours=1))
    tick(h.rt)
    tick(h.rt)
    h.settle()
    assert len(nudges_to(slack, "UANA")) == 1 and posts_in(slack, "CMGR") == []
    assert len(posts_in(slack, "CWINLOSS")) == 1
    assert entry_state(h) == before
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Deal.overdue_at)).one() is None


# --- one scenario per adapter ----------------------------------------------------------------


def no_writes(fake_hubspot, fake_pipedrive) -> None:
    assert [c for c in fake_hubspot.calls if c.method == "PATCH"] == []
    assert [c for c in fake_pipedrive.calls if c.method == "PUT"] == []


@pytest.mark.parametrize("writeback", [True, False], ids=["writeback", "no-writeback"])
def test_hubspot_end_to_end(harness, fake_hubspot, fake_pipedrive, writeback):
    h = harness
    fake_hubspot.set_deal("9001")  # closed lost, "Price", owner 42 (the sample)
    h.clock.set(hs.CLOSED + timedelta(minutes=1))
    reply = hs.post_hubspot(h, hs.events({}))
    assert reply.status == 200 and reply.json()["stored"] == 1, reply.body

    owner_logs_it(h, external_id="hubspot:9001", crm_reason="Price", via="button")
    before = entry_state(h)
    messages, updates = (len(h.slack.calls_to(m)) for m in ("chat.postMessage", "chat.update"))

    # HubSpot retries the same event; later, another event about the deal (same state).
    h.clock.advance(hours=2)
    again = hs.post_hubspot(h, hs.events({"attemptNumber": 1}))
    assert again.status == 200 and again.json()["duplicates"] == 1
    fresh = hs.post_hubspot(h, hs.events({"eventId": 1753399999}))
    assert fresh.status == 200 and fresh.json()["stored"] == 1
    nothing_more_happens(h, before, messages=messages, updates=updates)
    # The scheduler's daily sync with HubSpot ran too, and found the deal already logged.
    assert fake_hubspot.calls_to("/crm/v3/objects/deals/search")

    # Written back once (where configured): the words as typed, not as Slack shows them.
    h.settle()
    if not writeback:
        no_writes(fake_hubspot, fake_pipedrive)
        return
    (write,) = [c for c in fake_hubspot.calls if c.method == "PATCH"]
    assert write.path == "/crm/v3/objects/deals/9001" and write.status == 200
    assert write.body == {"properties": {HS_WORDS: QUOTE, HS_CATEGORY: "Price"}}
    assert fake_hubspot.deals["9001"]["properties"][HS_WORDS] == QUOTE
    assert [c for c in fake_pipedrive.calls if c.method == "PUT"] == []


def test_salesforce_end_to_end(harness, fake_hubspot, fake_pipedrive):
    h = harness
    h.clock.set(sf.CLOSED + timedelta(hours=15))
    assert sf.acked(sf.post_salesforce(h, sf.message()))

    owner_logs_it(h, external_id=f"salesforce:{sf.OPP_ID}", crm_reason="Price", via="list")
    before = entry_state(h)
    messages, updates = (len(h.slack.calls_to(m)) for m in ("chat.postMessage", "chat.update"))

    # Salesforce re-delivers the notification, then sends a new one for the same data.
    h.clock.advance(hours=2)
    assert sf.acked(sf.post_salesforce(h, sf.message()))
    assert sf.acked(sf.post_salesforce(h, sf.message(sf.notification("04l5g00000AbCdFAAV"))))
    nothing_more_happens(h, before, messages=messages, updates=updates)
    h.settle()
    no_writes(fake_hubspot, fake_pipedrive)  # Salesforce has no write-back


@pytest.mark.parametrize("writeback", [True, False], ids=["writeback", "no-writeback"])
def test_pipedrive_end_to_end(harness, fake_hubspot, fake_pipedrive, writeback):
    h = harness
    fake_pipedrive.set_deal("4711", status="lost")  # as Pipedrive holds it (the sample)
    h.clock.set(pd.CLOSED + timedelta(minutes=1))
    reply = pd.post_pipedrive(h, pd.event())
    assert reply.status == 200 and reply.json()["stored"] == 1, reply.body

    owner_logs_it(h, external_id="pipedrive:4711", crm_reason="Price", via="button")
    before = entry_state(h)
    messages, updates = (len(h.slack.calls_to(m)) for m in ("chat.postMessage", "chat.update"))

    # Pipedrive retries the same event; then the same change as a new event.
    h.clock.advance(hours=2)
    again = pd.post_pipedrive(h, pd.event(attempt=2))
    assert again.status == 200 and again.json()["duplicates"] == 1
    fresh = pd.post_pipedrive(h, pd.event(event_id="6e4d3c2b-0000-4a7b-8c6d-5e4f3a2b1c0d"))
    assert fresh.status == 200, fresh.body
    nothing_more_happens(h, before, messages=messages, updates=updates)

    h.settle()
    if not writeback:
        no_writes(fake_hubspot, fake_pipedrive)
        return
    (write,) = [c for c in fake_pipedrive.calls if c.method == "PUT"]
    assert write.path == "/api/v1/deals/4711" and write.status == 200
    assert write.body == {PD_WORDS: QUOTE, PD_CATEGORY: "Price"}
    assert write.token_header == pd.PD_TOKEN
    assert fake_pipedrive.deals["4711"][PD_WORDS] == QUOTE
    assert [c for c in fake_hubspot.calls if c.method == "PATCH"] == []


def test_generic_signed_webhook_end_to_end(harness, fake_hubspot, fake_pipedrive):
    h = harness
    h.clock.set(generic.CLOSED + timedelta(hours=1))
    body = generic.deal()
    reply = h.deal_closed(body)
    assert reply.status == 201, reply.body

    owner_logs_it(h, external_id="CRM-1", crm_reason=None, via="list")
    before = entry_state(h)
    messages, updates = (len(h.slack.calls_to(m)) for m in ("chat.postMessage", "chat.update"))

    # The CRM sends the same deal again (its retry, or a re-save of the closed deal).
    h.clock.advance(hours=2)
    again = h.deal_closed(copy.deepcopy(body))
    assert again.status == 200 and again.json()["duplicate"] is True
    nothing_more_happens(h, before, messages=messages, updates=updates)
    h.settle()
    no_writes(fake_hubspot, fake_pipedrive)  # a deal no CRM adapter sent


def test_winloss_typed_in_the_dm_logs_the_deal_the_crm_sent(harness):
    h, slack = harness, harness.slack
    h.clock.set(generic.CLOSED + timedelta(hours=1))
    assert h.deal_closed(generic.deal()).status == 201
    (nudge,) = nudges_to(slack, "UANA")

    # The owner types /winloss (no argument) in the DM the nudge came to: asked which deal,
    # only they see the answer, and the CRM's deal is offered with its own "Log it".
    fields = sample("slash_command.bolt_python_test.decoded.json")
    fields.update(
        user_id="UANA",
        text="",
        command="/winloss",
        trigger_id=slack.new_trigger_id(),
        response_url=slack.new_response_url(),
        channel_id=nudge.response["channel"],
        channel_name="directmessage",
    )
    body = urllib.parse.urlencode(fields).encode()
    reply = h.request("/slack/events", body, content_type="application/x-www-form-urlencoded")
    assert reply.status == 200
    asked = reply.json()
    assert asked.get("response_type") != "in_channel" and "Which deal?" in json.dumps(asked)
    assert slack.calls_to("views.open") == []  # no blank form that would make a second deal
    dm = nudge.response["channel"]
    deal_pk = button_value(asked)
    assert deal_pk == button_value(stored(slack, nudge))
    trigger_id = click(h, "UANA", channel=dm, message_ts=None, value=deal_pk)
    opened = slack.calls_to("views.open")[-1]
    assert opened.params["trigger_id"] == trigger_id
    modal = opened.params["view"]
    typed = fill(
        modal,
        reason=QUOTE,
        reason_category="Price",
        insight="Lead with consolidation",
    )
    assert submit_winloss(h, "UANA", modal, typed).status == 200
    assert len(posts_in(slack, "CWINLOSS")) == 1

    # "Another deal" under the question opens the blank form, with that click's trigger_id.
    another = button_value(asked, "winloss_open_blank")
    payload = sample("block_actions_button.bolt_python_test.json")
    payload.update(
        user={"id": "UANA", "username": "uana", "team_id": "T111"},
        container={
            "type": "message",
            "message_ts": "1700000000.000100",
            "channel_id": dm,
            "is_ephemeral": True,
        },
        channel={"id": dm, "name": "directmessage"},
        trigger_id=slack.new_trigger_id(),
        response_url=slack.new_response_url(),
    )
    payload.pop("message", None)
    payload["actions"][0].update(action_id="winloss_open_blank", value=another, block_id="b")
    assert h.interactive(payload).status == 200
    blank = slack.calls_to("views.open")[-1]
    assert blank.params["trigger_id"] == payload["trigger_id"]
    assert "Acme renewal" not in json.dumps(blank.params["view"])

    # One deal, the CRM's, with its entry; nobody is reminded or escalated.
    with session_scope(h.rt.session_factory) as s:
        assert [(d.external_id, d.entry is not None) for d in s.scalars(select(Deal))] == [
            ("CRM-1", True)
        ]
    h.clock.set(generic.CLOSED + timedelta(hours=25))
    tick(h.rt)
    tick(h.rt)
    assert len(nudges_to(slack, "UANA")) == 1 and posts_in(slack, "CMGR") == []
