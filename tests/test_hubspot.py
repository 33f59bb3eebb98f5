"""HubSpot end to end: HubSpot's signed request -> POST /hooks/hubspot (the real WSGI server)
-> the delivery stored -> the deal read from the fake HubSpot API -> the owner's DM in the fake
Slack -> the /winloss modal with HubSpot's note beside the customer's words."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.intake.hubspot import signature_valid, signed_uri
from bot.models import CrmDelivery, Deal, InboxState, WinLossEntry
from tests.fakehubspot import FakeHubSpot
from tests.fakehubspot import sample as hs_sample
from tests.harness import tick
from tests.test_loop_scenario import all_text, dms_to, stored
from tests.test_winloss_scenario import QUOTE, count, fill, nudges_to, posts_in, submit_winloss

CLIENT_SECRET = "hubspot-client-secret"
HS_TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
CLOSED = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
DOC_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"


@pytest.fixture
def fake_hubspot():
    from bot.intake import hubspot_api

    hubspot_api._stages.clear()  # a port may come round again: no pipelines of an old fake
    fake = FakeHubSpot(token=HS_TOKEN)
    fake.start()
    fake.add_owner("42", "ana@example.com")
    fake.set_deal("9001")  # closed lost, "Price", owner 42 (the sample)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def settings_overrides(fake_hubspot, request):
    """HubSpot on, against the fake; a test's indirect parameter changes them (None: off)."""
    settings = {
        "WINLOSS_CHANNEL": "CWINLOSS",
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "SALES_MANAGERS": "UMGR",
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_ACCESS_TOKEN": HS_TOKEN,
        "HUBSPOT_API_URL": fake_hubspot.url,
    }
    settings.update(getattr(request, "param", {}))
    return settings


# --- signing as HubSpot does (tests/crm_samples/hubspot/README.md) ------------------------

HUBSPOT_DECODES = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


def sign_v3(method: str, uri: str, body: bytes, timestamp: str, secret: str = CLIENT_SECRET):
    """The v3 signature, computed from HubSpot's documented steps (independently of bot/)."""
    for encoded, decoded in HUBSPOT_DECODES.items():
        uri = uri.replace(encoded, decoded).replace(encoded.lower(), decoded)
    source = (method + uri).encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def events(*changes: dict) -> list[dict]:
    """A Webhooks API delivery: the sample event, once per ``changes``."""
    base = hs_sample("webhook_deal_stage_change.json")[0]
    return [{**copy.deepcopy(base), **change} for change in changes]


def post_hubspot(
    h,
    payload,
    *,
    version: str = "v3",
    secret: str = CLIENT_SECRET,
    timestamp_ms: int | None = None,
    uri: str | None = None,
    query: str = "",
    body_sent: bytes | None = None,
):
    """POST /hooks/hubspot as HubSpot does: compact JSON, signed (``version`` v3, v2, v1 or
    None), ``uri`` the one HubSpot signs (default: the harness's own URL)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    path = "/hooks/hubspot" + (f"?{query}" if query else "")
    uri = uri or (h.url + path)
    headers = {"Content-Type": "application/json", "User-Agent": "HubSpot Connect 2.0"}
    if version == "v3":
        ts = str(int(h.clock().timestamp() * 1000) if timestamp_ms is None else timestamp_ms)
        headers["X-HubSpot-Request-Timestamp"] = ts
        headers["X-HubSpot-Signature-v3"] = sign_v3("POST", uri, body, ts, secret)
    elif version == "v2":
        headers["X-HubSpot-Signature-Version"] = "v2"
        src = secret.encode() + b"POST" + uri.encode() + body
        headers["X-HubSpot-Signature"] = hashlib.sha256(src).hexdigest()
    elif version == "v1":
        headers["X-HubSpot-Signature-Version"] = "v1"
        headers["X-HubSpot-Signature"] = hashlib.sha256(secret.encode() + body).hexdigest()
    return h.request(path, body if body_sent is None else body_sent, headers=headers, signed=False)


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


# --- the signature ------------------------------------------------------------------------


def test_the_signature_checks_match_hubspots_documented_vectors():
    now = datetime.now(UTC)
    v1_body = (
        b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
        b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
        b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
    )
    v1 = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    headers = {"x-hubspot-signature-version": "v1", "x-hubspot-signature": v1}
    assert signature_valid(
        secret=DOC_SECRET, method="POST", uri="x", body=v1_body, headers=headers, now=now
    )
    assert not signature_valid(
        secret=DOC_SECRET, method="POST", uri="x", body=v1_body + b" ", headers=headers, now=now
    )
    uri = "https://www.example.com/webhook_uri"
    for method, body, expected in (
        ("GET", b"", "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"),
        (
            "POST",
            b'{"example_field":"example_value"}',
            "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900",
        ),
    ):
        headers = {"x-hubspot-signature-version": "v2", "x-hubspot-signature": expected}
        assert signature_valid(
            secret=DOC_SECRET, method=method, uri=uri, body=body, headers=headers, now=now
        )
        assert not signature_valid(
            secret=DOC_SECRET, method=method, uri=uri + "/", body=body, headers=headers, now=now
        )
    # v3: only the listed characters are decoded (not %20, not %26).
    assert (
        signed_uri("https://a.example/hooks/hubspot?next=https%3A%2F%2Fb%2Cc%20d%26e%3b")
        == "https://a.example/hooks/hubspot?next=https://b,c%20d%26e;"
    )


def test_a_bad_or_stale_signature_is_401_and_nothing_is_stored(harness, fake_hubspot):
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=5))
    payload = events({})
    body = json.dumps(payload).encode()
    now_ms = int(h.clock().timestamp() * 1000)
    refused = [
        post_hubspot(h, payload, secret="not-the-secret"),
        post_hubspot(h, payload, timestamp_ms=now_ms - 5 * 60 * 1000 - 1000),  # stale
        post_hubspot(h, payload, timestamp_ms=now_ms + 10 * 60 * 1000),  # far ahead
        post_hubspot(h, payload, body_sent=body.replace(b"9001", b"9002")),  # tampered
        post_hubspot(h, payload, uri="https://elsewhere.example/hooks/hubspot"),
        post_hubspot(h, payload, version="v1", secret="not-the-secret"),
        post_hubspot(h, payload, version="v2", secret="not-the-secret"),
        post_hubspot(h, payload, version=None),  # unsigned
    ]
    for reply in refused:
        assert reply.status == 401, reply.body
        assert reply.json()["ok"] is False
    assert deliveries(h) == [] and deals(h) == []
    assert fake_hubspot.calls == [] and dms_to(h.slack, "UANA") == []
    # Just within five minutes it is HubSpot's request.
    fresh = post_hubspot(h, payload, timestamp_ms=now_ms - 4 * 60 * 1000)
    assert fresh.status == 200 and fresh.json()["stored"] == 1


@pytest.mark.parametrize(
    "settings_overrides",
    [{"HUBSPOT_CLIENT_SECRET": None, "HUBSPOT_ACCESS_TOKEN": None}],
    indirect=True,
)
def test_without_its_settings_the_endpoint_answers_503_saying_what_to_set(harness):
    reply = post_hubspot(harness, events({}))
    assert reply.status == 503
    assert "HUBSPOT_CLIENT_SECRET" in reply.json()["error"]
    assert deliveries(harness) == []


# --- end to end ---------------------------------------------------------------------------


def test_hubspot_to_the_owners_dm_and_the_modal_shows_hubspots_note(harness, fake_hubspot):
    h, slack = harness, harness.slack
    h.clock.set(CLOSED + timedelta(minutes=1))

    reply = post_hubspot(h, events({}))
    assert reply.status == 200, reply.body
    assert reply.json() == {"ok": True, "stored": 1, "duplicates": 0, "ignored": 0}

    # HubSpot was read with the private app's token: the deal, its stage, its owner.
    paths = [c.path for c in fake_hubspot.calls]
    assert paths == ["/crm/v3/objects/deals/9001", "/crm/v3/pipelines/deals", "/crm/v3/owners/42"]
    assert {c.authorization for c in fake_hubspot.calls} == {f"Bearer {HS_TOKEN}"}
    assert "closed_lost_reason" in fake_hubspot.calls[0].query["properties"][0]

    (deal,) = deals(h)
    assert deal.external_id == "hubspot:9001" and deal.outcome == "lost"
    assert deal.owner_email == "ana@example.com" and deal.crm_reason == "Price"
    assert deal.closed_at == CLOSED and str(deal.amount) == "12000.00"
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.DONE and delivery.delivery_id == "1753399442"
    assert delivery.headers["user-agent"] == "HubSpot Connect 2.0"
    assert json.loads(delivery.body)["propertyValue"] == "closedlost"

    (nudge,) = nudges_to(slack, "UANA")
    assert "Acme renewal" in all_text(nudge.params)

    # The modal: HubSpot's reason is a note beside the field, never in it.
    h.click_button("UANA", stored(slack, nudge), nudge.response["channel"], "winloss_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    (note,) = [b for b in modal["blocks"] if b.get("block_id") == "crm_note"]
    assert note["type"] == "context" and "Price" in json.dumps(note)
    values = fill(modal)
    assert values["reason"] is None and values["outcome"] == "lost"
    blocks = [b.get("block_id") for b in modal["blocks"]]
    assert blocks.index("crm_note") == blocks.index("reason") - 1

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


def test_the_same_delivery_twice_is_one_dm(harness, fake_hubspot):
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    first = post_hubspot(h, events({}))
    assert first.json()["stored"] == 1
    # HubSpot's retry: the same eventId, its attemptNumber counted up, in a new batch with
    # another event about the same deal.
    again = post_hubspot(h, events({"attemptNumber": 1}, {"eventId": 1753399443}))
    assert again.status == 200
    assert again.json() == {"ok": True, "stored": 1, "duplicates": 1, "ignored": 0}
    assert post_hubspot(h, events({"attemptNumber": 2})).json()["duplicates"] == 1
    assert len(deals(h)) == 1 and len(nudges_to(h.slack, "UANA")) == 1
    assert len(fake_hubspot.calls_to("/crm/v3/objects/deals")) == 2  # the 2nd event read it


def test_a_stage_that_is_not_closed_is_200_and_nothing(harness, fake_hubspot):
    h = harness
    h.clock.set(CLOSED)
    fake_hubspot.set_deal("9001", dealstage="contractsent", closed_lost_reason=None)
    reply = post_hubspot(h, events({"propertyValue": "contractsent"}))
    assert reply.status == 200 and reply.json()["stored"] == 1
    # Events about anything else are answered and dropped.
    other = post_hubspot(
        h,
        events(
            {"eventId": 5, "subscriptionType": "company.creation", "objectId": 7},
            {"eventId": 6, "propertyName": "amount", "propertyValue": "100"},
        ),
    )
    assert other.json() == {"ok": True, "stored": 0, "duplicates": 0, "ignored": 2}
    assert deals(h) == [] and h.slack.calls_to("chat.postMessage") == []
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.DONE and "not closed" in delivery.note
    # A stage of another pipeline that closes lost is a loss.
    fake_hubspot.set_deal("9001", pipeline="31415926", dealstage="31415929")
    post_hubspot(h, events({"eventId": 7, "propertyValue": "31415929"}))
    (deal,) = deals(h)
    assert deal.outcome == "lost"


def test_an_owner_slack_cannot_find_goes_to_the_managers_channel(harness, fake_hubspot):
    h, slack = harness, harness.slack
    h.clock.set(CLOSED)
    fake_hubspot.add_owner("43", "gone@example.com")
    fake_hubspot.set_deal("9001", hubspot_owner_id="43")
    fake_hubspot.set_deal("9002", hubspot_owner_id="999")  # no such owner in HubSpot
    fake_hubspot.set_deal("9003", hubspot_owner_id=None)  # nobody owns it
    post_hubspot(
        h,
        events({}, {"eventId": 2, "objectId": 9002}, {"eventId": 3, "objectId": 9003}),
    )
    reports = posts_in(slack, "CMGR")
    assert len(reports) == 3
    assert sum("gone@example.com" in r.params["text"] for r in reports) == 1  # sent in any order
    assert dms_to(slack, "UANA") == []
    assert len(deals(h)) == 3
    tick(h.rt)
    assert len(posts_in(slack, "CMGR")) == 3


def test_reordered_deliveries_end_in_the_deals_latest_state(harness, fake_hubspot):
    h, slack = harness, harness.slack
    h.clock.set(CLOSED + timedelta(minutes=1))
    # HubSpot now: closed lost. The later event arrives first, the earlier one after it.
    later = {"eventId": 20, "propertyValue": "closedlost", "occurredAt": 1763647200000}
    earlier = {"eventId": 10, "propertyValue": "contractsent", "occurredAt": 1763647100000}
    post_hubspot(h, events(later))
    post_hubspot(h, events(earlier))
    (deal,) = deals(h)
    assert deal.outcome == "lost" and deal.crm_reason == "Price"
    assert len(nudges_to(slack, "UANA")) == 1
    # Reopened and won before the rep logged it: the deal follows, nobody is asked twice.
    fake_hubspot.set_deal(
        "9001", dealstage="closedwon", closed_won_reason="Onboarding speed", amount="15000"
    )
    post_hubspot(h, events({"eventId": 30, "propertyValue": "closedwon"}))
    (deal,) = deals(h)
    assert deal.outcome == "won" and deal.crm_reason == "Onboarding speed"
    assert str(deal.amount) == "15000.00"
    assert len(nudges_to(slack, "UANA")) == 1


def test_hubspot_down_keeps_the_delivery_and_a_later_tick_processes_it(
    harness, fake_hubspot, caplog
):
    h, slack = harness, harness.slack
    h.clock.set(CLOSED + timedelta(minutes=1))
    fake_hubspot.down = True
    reply = post_hubspot(h, events({}))
    assert reply.status == 200 and reply.json()["stored"] == 1
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.PENDING and "503" in delivery.last_error
    assert deals(h) == [] and nudges_to(slack, "UANA") == []

    tick(h.rt)  # its backoff is not over: not tried (the tick's daily sync did try HubSpot)
    assert len(fake_hubspot.calls_to("/crm/v3/objects/deals/9001")) == 1
    fake_hubspot.down = False
    fake_hubspot.rate_limited = 1
    h.clock.advance(minutes=1)
    tick(h.rt)  # tried: 429
    assert deliveries(h)[0].state == InboxState.PENDING
    assert "429" in deliveries(h)[0].last_error
    h.clock.advance(minutes=2)
    tick(h.rt)
    h.settle()
    assert [d.last_error for d in deliveries(h)] == [None]
    assert len(nudges_to(slack, "UANA")) == 1
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.DONE and delivery.attempts == 3


def test_a_crash_after_storing_loses_nothing(harness, fake_hubspot, monkeypatch):
    """The process dies between its answer and the processing: the tick does it."""
    import bot.intake.deliveries as deliveries_mod

    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    real = deliveries_mod.process
    monkeypatch.setattr(deliveries_mod, "process", lambda rt, pks: None)
    assert post_hubspot(h, events({})).json()["stored"] == 1
    assert deals(h) == [] and fake_hubspot.calls == []
    monkeypatch.setattr(deliveries_mod, "process", real)
    tick(h.another_process())
    assert len(nudges_to(h.slack, "UANA")) == 1


PUBLIC_URL = "https://closeloop.example.com/crm/hs"


@pytest.mark.parametrize("settings_overrides", [{"HUBSPOT_WEBHOOK_URL": PUBLIC_URL}], indirect=True)
@pytest.mark.parametrize("query", ["", "portal=62515&next=https%3A%2F%2Fx.example%2Fa%2Cb"])
def test_a_workflow_webhook_behind_a_proxy_signed_v3_or_v2(harness, fake_hubspot, query):
    """The public URL HubSpot calls (HUBSPOT_WEBHOOK_URL) is the URI it signs."""
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    public = PUBLIC_URL + (f"?{query}" if query else "")
    workflow = hs_sample("workflow_deal.json")
    # Signed for our own address, not the public one: refused.
    assert post_hubspot(h, workflow, query=query).status == 401
    reply = post_hubspot(h, workflow, uri=public, query=query)
    assert reply.status == 200 and reply.json()["stored"] == 1
    (delivery,) = deliveries(h)
    assert delivery.delivery_id == "workflow:9001:1763647200000:closedlost"
    assert delivery.body == json.dumps(workflow)  # the raw body, as sent
    assert len(nudges_to(h.slack, "UANA")) == 1
    # The workflow firing again for the same closed state (v2 this time): a duplicate.
    again = post_hubspot(h, workflow, version="v2", uri=public, query=query)
    assert again.json()["duplicates"] == 1 and len(nudges_to(h.slack, "UANA")) == 1


def test_malformed_hubspot_bodies_are_400_and_store_nothing(harness, fake_hubspot):
    h = harness
    h.clock.set(CLOSED)
    for body in (b"{not json", b'"text"', b'{"properties": {}}'):
        reply = post_hubspot(h, body)
        assert reply.status == 400, (body, reply.body)
    assert deliveries(h) == []


def test_a_malformed_event_is_ignored_and_the_good_ones_of_its_batch_stored(harness, fake_hubspot):
    h = harness
    h.clock.set(CLOSED)
    good = events({})[0]
    batch = [{"objectId": 1}, {**good, "eventId": 77, "objectId": None}, good]
    reply = post_hubspot(h, batch)
    assert reply.status == 200, reply.body
    assert reply.json() == {"ok": True, "stored": 1, "duplicates": 0, "ignored": 2}
    assert [d.delivery_id for d in deliveries(h)] == [str(good["eventId"])]


def test_a_delivery_is_given_up_after_its_last_attempt_and_done_ones_are_forgotten(
    harness, fake_hubspot
):
    from bot.services import crm_inbox

    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    fake_hubspot.down = True
    post_hubspot(h, events({}))
    for _ in range(crm_inbox.MAX_ATTEMPTS + 2):
        h.clock.advance(minutes=61)
        tick(h.rt)
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.FAILED
    assert delivery.attempts == crm_inbox.MAX_ATTEMPTS and "503" in delivery.last_error
    # A retry of a failed delivery is still a duplicate: it is not tried again.
    fake_hubspot.down = False
    assert post_hubspot(h, events({"attemptNumber": 9})).json()["duplicates"] == 1
    assert deals(h) == []
    # A done delivery is forgotten after 30 days, a failed one kept.
    post_hubspot(h, events({"eventId": 99}))
    assert [d.state for d in deliveries(h)] == [InboxState.FAILED, InboxState.DONE]
    h.clock.advance(days=31)
    tick(h.rt)
    assert [d.state for d in deliveries(h)] == [InboxState.FAILED]


def test_a_database_that_cannot_store_the_delivery_is_503_so_hubspot_retries(
    harness, fake_hubspot, monkeypatch
):
    from sqlalchemy.exc import OperationalError

    from bot.intake import hubspot as adapter

    h = harness
    real = adapter.crm_inbox.store

    def down(*args, **kwargs):
        raise OperationalError("INSERT INTO crm_deliveries", {}, Exception("database is locked"))

    monkeypatch.setattr(adapter.crm_inbox, "store", down)
    events = hs_sample("webhook_deal_stage_change.json")
    refused = post_hubspot(h, events)
    assert refused.status == 503 and "try again" in refused.json()["error"]
    monkeypatch.setattr(adapter.crm_inbox, "store", real)
    assert post_hubspot(h, events).status == 200
    assert len(deliveries(h)) == 1
