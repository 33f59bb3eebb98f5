"""Pipedrive end to end: Pipedrive's request (webhooks v2, HTTP basic auth) -> POST
/hooks/pipedrive (the real WSGI server) -> the delivery stored -> the owner's email read from the
fake Pipedrive API -> the owner's DM in the fake Slack -> the /winloss modal with Pipedrive's
lost reason as a note beside the customer's words."""

from __future__ import annotations

import base64
import copy
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.config import ConfigError
from bot.db import session_scope
from bot.intake.pipedrive import MAX_BODY, credentials_valid
from bot.intake.pipedrive_events import event_time
from bot.models import CrmDelivery, Deal, InboxState, WinLossEntry
from tests.fakepipedrive import FakePipedrive
from tests.fakepipedrive import sample as pd_sample
from tests.harness import tick
from tests.test_config import settings as config_settings
from tests.test_loop_scenario import all_text, dms_to, stored
from tests.test_winloss_scenario import QUOTE, count, fill, nudges_to, posts_in, submit_winloss

USER = "closeloop"
PASSWORD = "correct horse: battery staple"  # a colon in the password is allowed
PD_TOKEN = "659c9fddb16335e48cc67114694b52074e812e03"
CLOSED = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


@pytest.fixture
def fake_pipedrive():
    fake = FakePipedrive(token=PD_TOKEN)
    fake.start()
    fake.add_user("42", "ana@example.com")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def settings_overrides(fake_pipedrive, request):
    """Pipedrive on, against the fake; a test's indirect parameter changes them (None: off)."""
    settings = {
        "WINLOSS_CHANNEL": "CWINLOSS",
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "SALES_MANAGERS": "UMGR",
        "PIPEDRIVE_WEBHOOK_USER": USER,
        "PIPEDRIVE_WEBHOOK_PASSWORD": PASSWORD,
        "PIPEDRIVE_API_TOKEN": PD_TOKEN,
        "PIPEDRIVE_API_URL": fake_pipedrive.url + "/api/v1",  # as a company domain's
    }
    settings.update(getattr(request, "param", {}))
    return settings


def basic(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def event(
    *,
    event_id: str | None = None,
    attempt: int = 1,
    timestamp: object = None,
    data: dict | None = None,
    previous: dict | None | str = "sample",
    action: str | None = None,
    entity: str | None = None,
) -> dict:
    """The sample delivery (deal 4711 lost, from open), with what a test changes."""
    body = copy.deepcopy(pd_sample("webhook_deal_lost.json"))
    meta = body["meta"]
    if event_id is not None:
        meta["id"] = event_id
    meta["attempt"] = attempt
    if timestamp is not None:
        meta["timestamp"] = timestamp
    if action is not None:
        meta["action"] = action
    if entity is not None:
        meta["entity"] = entity
    body["data"].update(data or {})
    if previous != "sample":
        body["previous"] = previous
    return body


def post_pipedrive(h, payload, *, authorization: str | None = None, raw: bytes | None = None):
    """POST /hooks/pipedrive as Pipedrive does: JSON, with the webhook's basic auth."""
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "Pipedrive Webhooks"}
    auth = basic() if authorization is None else authorization
    if auth:
        headers["Authorization"] = auth
    return h.request("/hooks/pipedrive", body, headers=headers, signed=False)


def deliveries(h) -> list[CrmDelivery]:
    with session_scope(h.rt.session_factory) as s:
        rows = list(s.scalars(select(CrmDelivery).order_by(CrmDelivery.id)))
        s.expunge_all()
        return rows


def deals(h) -> list[Deal]:
    with session_scope(h.rt.session_factory) as s:
        rows = list(s.scalars(select(Deal).order_by(Deal.id)))
        s.expunge_all()
        return rows


# --- basic auth ---------------------------------------------------------------------------


def test_credentials_are_basic_auth_exactly():
    ok = basic()
    assert credentials_valid(ok, user=USER, password=PASSWORD)
    assert credentials_valid("basic " + ok.split(" ")[1], user=USER, password=PASSWORD)
    for bad in (
        None,
        "",
        basic(password="wrong"),
        basic(user="other"),
        basic(password=PASSWORD + " "),
        "Bearer " + ok.split(" ")[1],
        "Basic not-base64!",
        "Basic " + base64.b64encode(USER.encode()).decode(),  # no colon
    ):
        assert not credentials_valid(bad, user=USER, password=PASSWORD), bad


def test_wrong_basic_auth_is_401_and_nothing_is_stored(harness, fake_pipedrive, caplog):
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    caplog.set_level(logging.DEBUG)
    for auth in ("", basic(password="pw-sent-by-mistake"), basic(user="admin"), "Basic ###"):
        reply = post_pipedrive(h, event(), authorization=auth)
        assert reply.status == 401, reply.body
        assert reply.json() == {"ok": False, "error": "invalid credentials"}
    assert deliveries(h) == [] and deals(h) == []
    assert fake_pipedrive.calls == [] and dms_to(h.slack, "UANA") == []
    # Neither the password sent nor the one expected is ever logged.
    assert "pw-sent-by-mistake" not in caplog.text and "battery" not in caplog.text


def test_a_401_challenges_for_basic_auth(harness):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        harness.url + "/hooks/pipedrive", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401
    assert err.value.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert harness.request("/hooks/pipedrive", method="GET", signed=False).status == 405


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "PIPEDRIVE_WEBHOOK_USER": None,
            "PIPEDRIVE_WEBHOOK_PASSWORD": None,
            "PIPEDRIVE_API_TOKEN": None,
        }
    ],
    indirect=True,
)
def test_without_its_settings_the_endpoint_answers_503_saying_what_to_set(harness):
    reply = post_pipedrive(harness, event())
    assert reply.status == 503
    assert "PIPEDRIVE_WEBHOOK_USER" in reply.json()["error"]
    assert deliveries(harness) == []


# --- end to end ---------------------------------------------------------------------------


def test_pipedrive_to_the_owners_dm_and_the_modal_shows_the_lost_reason(harness, fake_pipedrive):
    h, slack = harness, harness.slack
    h.clock.set(CLOSED + timedelta(minutes=1))

    reply = post_pipedrive(h, event())
    assert reply.status == 200, reply.body
    assert reply.json() == {"ok": True, "stored": 1, "duplicates": 0, "ignored": 0}

    # The owner's email, read with the API token in the x-api-token header (never the URL).
    (call,) = fake_pipedrive.calls
    assert call.path == "/api/v1/users/42" and call.token_header == PD_TOKEN
    assert call.query == {} and call.status == 200

    (deal,) = deals(h)
    assert deal.external_id == "pipedrive:4711" and deal.outcome == "lost"
    assert deal.name == "Acme renewal" and deal.owner_email == "ana@example.com"
    assert deal.crm_reason == "Price" and deal.closed_at == CLOSED
    assert str(deal.amount) == "12000.00"
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.DONE
    assert delivery.delivery_id == "deal:4711:5d3c2b1a-9e8f-4a7b-8c6d-5e4f3a2b1c0d"
    assert delivery.headers == {  # never Authorization
        "user-agent": "Pipedrive Webhooks",
        "content-type": "application/json",
    }
    assert json.loads(delivery.body) == event()  # the raw delivery

    (nudge,) = nudges_to(slack, "UANA")
    assert "Acme renewal" in all_text(nudge.params)

    # The modal: Pipedrive's lost reason is a note beside the field, never in it.
    h.click_button("UANA", stored(slack, nudge), nudge.response["channel"], "winloss_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    (note,) = [b for b in modal["blocks"] if b.get("block_id") == "crm_note"]
    assert "Price" in json.dumps(note)
    values = fill(modal)
    assert values["reason"] is None and values["outcome"] == "lost"

    # The rep still writes what the customer said.
    assert submit_winloss(h, "UANA", modal, fill(modal, reason="price")).status == 200
    assert count(h, WinLossEntry) == 0
    accepted = submit_winloss(
        h, "UANA", modal, fill(modal, reason=QUOTE, reason_category="Price", insight="ROI")
    )
    assert accepted.status == 200 and accepted.body == ""
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(WinLossEntry.reason)).one() == QUOTE
    assert len(posts_in(slack, "CWINLOSS")) == 1


def test_the_same_delivery_twice_is_one_dm(harness, fake_pipedrive):
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    assert post_pipedrive(h, event()).json()["stored"] == 1
    # Pipedrive's retries: the same event id, meta.attempt counting up.
    for attempt in (2, 3, 4):
        again = post_pipedrive(h, event(attempt=attempt))
        assert again.status == 200
        assert again.json() == {"ok": True, "stored": 0, "duplicates": 1, "ignored": 0}
    assert len(deliveries(h)) == 1 and len(deals(h)) == 1
    assert len(nudges_to(h.slack, "UANA")) == 1
    assert len(fake_pipedrive.calls) == 1


def test_a_deal_update_that_is_not_a_close_is_200_and_nothing(harness, fake_pipedrive):
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    ignored = [
        # Still open: the title changed.
        event(
            event_id="e-open",
            data={"status": "open", "lost_reason": None, "lost_time": None},
            previous={"title": "Acme"},
        ),
        # Lost already: the value changed, not the status.
        event(event_id="e-value", previous={"value": 10000}),
        # "previous" says status, but it is the same.
        event(event_id="e-same", previous={"status": "lost"}),
        # Created open; deleted; another kind of object.
        event(event_id="e-new", action="create", previous=None, data={"status": "open"}),
        event(event_id="e-del", action="delete"),
        event(event_id="e-person", entity="person"),
    ]
    for payload in ignored:
        reply = post_pipedrive(h, payload)
        assert reply.status == 200, reply.body
        assert reply.json() == {"ok": True, "stored": 0, "duplicates": 0, "ignored": 1}
    # Reopened (won -> open): stored, as it orders later changes, and nothing done.
    reopened = event(
        event_id="e-reopen",
        data={"status": "open", "lost_reason": None, "lost_time": None},
        previous={"status": "won"},
    )
    assert post_pipedrive(h, reopened).json()["stored"] == 1
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.DONE and "reopened" in delivery.note
    assert deals(h) == [] and h.slack.calls_to("chat.postMessage") == []
    assert fake_pipedrive.calls == []
    # A deal created already won is a close.
    created = event(
        event_id="e-created-won",
        action="create",
        previous=None,
        data={"status": "won", "won_time": "2026-11-20T14:00:00Z", "lost_reason": None},
    )
    assert post_pipedrive(h, created).json()["stored"] == 1
    (deal,) = deals(h)
    assert deal.outcome == "won" and deal.crm_reason is None


def test_an_unknown_owner_goes_to_the_managers_channel(harness, fake_pipedrive):
    h, slack = harness, harness.slack
    h.clock.set(CLOSED + timedelta(minutes=1))
    fake_pipedrive.add_user("43", "gone@example.com")  # Slack has nobody with this email
    post_pipedrive(h, event(event_id="a", data={"id": 1, "owner_id": 43}))
    post_pipedrive(h, event(event_id="b", data={"id": 2, "owner_id": 999}))  # 404 in Pipedrive
    post_pipedrive(h, event(event_id="c", data={"id": 3, "owner_id": None}))
    reports = posts_in(slack, "CMGR")
    assert len(reports) == 3
    assert sum("gone@example.com" in r.params["text"] for r in reports) == 1
    assert dms_to(slack, "UANA") == [] and len(deals(h)) == 3
    assert [c.status for c in fake_pipedrive.calls] == [200, 404]
    tick(h.rt)
    assert len(posts_in(slack, "CMGR")) == 3


@pytest.mark.parametrize("arrival", [(2, 0, 1), (0, 2, 1), (1, 0, 2)])
def test_reordered_deliveries_end_in_the_latest_state(harness, fake_pipedrive, arrival):
    """Won, then reopened, then lost (meta.timestamp), arriving in any order: lost, one DM."""
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=5))
    won = event(
        event_id="1-won",
        timestamp="2026-11-20T13:58:00.000Z",
        data={
            "status": "won",
            "won_time": "2026-11-20T13:58:00Z",
            "lost_time": None,
            "lost_reason": None,
        },
        previous={"status": "open"},
    )
    reopened = event(
        event_id="2-reopened",
        timestamp=1795183140,  # 13:59:00, as a 10-character timestamp
        data={"status": "open", "won_time": None, "lost_time": None, "lost_reason": None},
        previous={"status": "won"},
    )
    lost = event(event_id="3-lost", timestamp="2026-11-20T14:00:00.000Z")
    changes = [won, reopened, lost]
    for index in arrival:
        assert post_pipedrive(h, changes[index]).status == 200
    (deal,) = deals(h)
    # (The close time stays the first close's: refresh_crm_deal brings outcome, name, amount
    # and the CRM's reason up to date, not the close time and its deadline.)
    assert deal.outcome == "lost" and deal.crm_reason == "Price"
    assert len(nudges_to(h.slack, "UANA")) == 1
    assert all(d.state == InboxState.DONE for d in deliveries(h))
    notes = {d.delivery_id.split(":")[-1]: d.note for d in deliveries(h)}
    assert "superseded" in notes["1-won"] or arrival == (0, 2, 1)
    assert "superseded" in notes["2-reopened"] or arrival == (1, 0, 2)
    assert "superseded" not in notes["3-lost"]
    tick(h.rt)
    assert deals(h)[0].outcome == "lost" and len(nudges_to(h.slack, "UANA")) == 1


def test_event_time_reads_each_documented_form():
    assert event_time({"meta": {"timestamp": "2026-11-20T14:00:00.000Z"}}) == CLOSED.timestamp()
    assert event_time({"meta": {"timestamp": 1795183200}}) == CLOSED.timestamp()
    assert event_time({"meta": {"timestamp": "1795183200000"}}) == CLOSED.timestamp()
    no_meta_time = {"meta": {}, "data": {"update_time": "2026-11-20 14:00:00"}}
    assert event_time(no_meta_time) == CLOSED.timestamp()
    assert event_time({"meta": {"timestamp": "soon"}}) == 0.0


def test_pipedrive_down_keeps_the_delivery_and_a_later_tick_processes_it(harness, fake_pipedrive):
    h, slack = harness, harness.slack
    h.clock.set(CLOSED + timedelta(minutes=1))
    fake_pipedrive.down = True
    reply = post_pipedrive(h, event())
    assert reply.status == 200 and reply.json()["stored"] == 1
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.PENDING and "503" in delivery.last_error
    assert deals(h) == [] and nudges_to(slack, "UANA") == []

    tick(h.rt)  # its backoff is not over: not tried (the day's sync fails too: down)
    assert len(fake_pipedrive.calls_to("/api/v1/users/42")) == 1
    fake_pipedrive.down = False
    h.clock.advance(minutes=1)
    tick(h.rt)
    h.settle()
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.DONE and delivery.attempts == 2
    assert delivery.last_error is None
    assert len(nudges_to(slack, "UANA")) == 1


@pytest.mark.parametrize("settings_overrides", [{"PIPEDRIVE_API_TOKEN": "revoked"}], indirect=True)
def test_a_refused_api_token_keeps_the_delivery_and_says_so(harness, fake_pipedrive, caplog):
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    assert post_pipedrive(h, event()).json()["stored"] == 1
    (call,) = fake_pipedrive.calls
    assert call.status == 401
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.PENDING and "unauthorized access" in delivery.last_error
    assert "PIPEDRIVE_API_TOKEN" in caplog.text and "revoked" not in caplog.text
    assert deals(h) == []


def test_a_value_in_another_currency_is_stored_and_the_mismatch_noted(harness, fake_pipedrive):
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    post_pipedrive(h, event(data={"currency": "EUR", "value": 9500.5}))
    (deal,) = deals(h)
    assert str(deal.amount) == "9500.50"
    (delivery,) = deliveries(h)
    assert "EUR" in delivery.note and "USD" in delivery.note


def test_malformed_bodies_are_400_too_large_413_and_store_nothing(harness, fake_pipedrive):
    h = harness
    h.clock.set(CLOSED)
    v1 = {"v": 1, "meta": {"action": "updated", "object": "deal", "id": 4711}, "current": {}}
    no_id = event()
    del no_id["meta"]["id"]
    for raw in (
        b"{not json",
        b'"text"',
        b'{"data": {}}',
        json.dumps(v1).encode(),
        json.dumps(no_id).encode(),
        json.dumps(event(data={"title": "a\u0000b"})).encode(),
    ):
        reply = post_pipedrive(h, None, raw=raw)
        assert reply.status == 400, (raw, reply.body)
    big = post_pipedrive(h, None, raw=b"{" + b" " * MAX_BODY + b"}")
    assert big.status == 413
    assert deliveries(h) == []


def test_a_crash_after_storing_loses_nothing(harness, fake_pipedrive, monkeypatch):
    import bot.intake.deliveries as deliveries_mod

    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    real = deliveries_mod.process
    monkeypatch.setattr(deliveries_mod, "process", lambda rt, pks: None)
    assert post_pipedrive(h, event()).json()["stored"] == 1
    assert deals(h) == [] and fake_pipedrive.calls == []
    monkeypatch.setattr(deliveries_mod, "process", real)
    tick(h.another_process())
    assert len(nudges_to(h.slack, "UANA")) == 1


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"PIPEDRIVE_WEBHOOK_USER": "u"}, "PIPEDRIVE_WEBHOOK_PASSWORD and PIPEDRIVE_API_TOKEN"),
        ({"PIPEDRIVE_WEBHOOK_USER": "u", "PIPEDRIVE_WEBHOOK_PASSWORD": "p"}, "PIPEDRIVE_API_TOKEN"),
        ({"PIPEDRIVE_API_TOKEN": "t"}, "PIPEDRIVE_WEBHOOK_USER"),
        ({"PIPEDRIVE_API_URL": "api.pipedrive.com"}, "PIPEDRIVE_API_URL"),
    ],
)
def test_a_bad_pipedrive_setting_is_one_line_naming_it(change, names):
    with pytest.raises(ConfigError) as err:
        config_settings(**change)
    message = str(err.value)
    assert names in message and "\n" not in message


def test_pipedrive_is_off_until_its_credentials_and_token_are_all_set():
    off = config_settings()
    assert not off.pipedrive_configured and off.pipedrive_api_url == "https://api.pipedrive.com/v1"
    on = config_settings(
        PIPEDRIVE_WEBHOOK_USER="u",
        PIPEDRIVE_WEBHOOK_PASSWORD="secret-pw",
        PIPEDRIVE_API_TOKEN="tok-123",
        PIPEDRIVE_API_URL="https://acme.pipedrive.com/api/v1/",
    )
    assert on.pipedrive_configured
    assert on.pipedrive_api_url == "https://acme.pipedrive.com/api/v1"
    assert "secret-pw" not in repr(on) and "tok-123" not in repr(on)
