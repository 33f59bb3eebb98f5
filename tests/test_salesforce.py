"""Salesforce end to end: Salesforce's Outbound Message (SOAP) -> POST /hooks/salesforce (the
real WSGI server) -> each notification stored -> the deal from its fields -> the owner's DM in
the fake Slack -> the /winloss modal with Salesforce's loss reason beside the customer's words.

The messages are built from tests/crm_samples/salesforce/notifications_opportunity.xml (the
shape of Salesforce's outbound messaging WSDL; sources in that folder's README)."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

import pytest
from sqlalchemy import select

from bot.config import ConfigError, Settings
from bot.db import session_scope
from bot.intake import salesforce
from bot.models import CrmDelivery, Deal, InboxState, WinLossEntry
from tests.harness import tick
from tests.test_loop_scenario import all_text, dms_to, stored
from tests.test_winloss_scenario import QUOTE, count, fill, nudges_to, posts_in, submit_winloss

SAMPLES = Path(__file__).parent / "crm_samples" / "salesforce"
SAMPLE = (SAMPLES / "notifications_opportunity.xml").read_text()
_NOTIFICATION = re.search(r" *<Notification>.*?</Notification>\n", SAMPLE, re.S).group()  # type: ignore[union-attr]
ORG_18 = "00D5g000004ABCDEAV"  # as Salesforce sends it
ORG_15 = "00D5g000004ABCD"  # as Setup > Company Information shows it
NOTE_ID = "04l5g00000AbCdEAAV"
OPP_ID = "0065g00000XyZ12AAB"
SECRET = "3f9c2a7be1d04c6f8a5b9e0d7c6b5a4f"
CLOSED = datetime(2026, 11, 20, tzinfo=UTC)
DROP = object()  # a field left out of the message
NS = {"soapenv": salesforce.SOAP_NS, "om": salesforce.OUTBOUND_NS}


@pytest.fixture
def settings_overrides(request):
    """Salesforce on; a test's indirect parameter changes them (None: unset)."""
    settings = {
        "WINLOSS_CHANNEL": "CWINLOSS",
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "SALES_MANAGERS": "UMGR",
        "SALESFORCE_ORG_ID": ORG_15,
        "SALESFORCE_WEBHOOK_SECRET": SECRET,
    }
    settings.update(getattr(request, "param", {}))
    return settings


# --- Salesforce's requests ----------------------------------------------------------------


def notification(note_id: str = NOTE_ID, **fields) -> str:
    """The sample's Notification, its id and fields changed (None: xsi:nil; DROP: left
    out; a field the sample does not have is added)."""
    return with_fields(_NOTIFICATION.replace(NOTE_ID, note_id), **fields)


def with_fields(block: str, **fields) -> str:
    """A Notification element's text with its sObject's fields changed (as above)."""
    for name, value in fields.items():
        pattern = re.compile(rf" *<sf:{name}(?: [^>]*)?(?:/>|>[^<]*</sf:{name}>)\n")
        if value is DROP:
            block = pattern.sub("", block)
            continue
        element = (
            f'     <sf:{name} xsi:nil="true"/>\n'
            if value is None
            else f"     <sf:{name}>{escape(str(value))}</sf:{name}>\n"
        )
        if pattern.search(block):
            block = pattern.sub(lambda _m, e=element: e, block)
        else:
            block = block.replace("    </sObject>", element + "    </sObject>")
    return block


def message(*notifications: str, org: str = ORG_18) -> bytes:
    """A SOAP notifications() request holding ``notifications`` (default: the sample's)."""
    head, tail = SAMPLE.split(_NOTIFICATION)
    blocks = notifications or (_NOTIFICATION,)
    return (head.replace(ORG_18, org) + "".join(blocks) + tail).encode()


def basic(password: str = SECRET, user: str = "salesforce") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def post_salesforce(h, body: bytes, *, auth: str | None = "basic", secret: str = SECRET):
    """POST /hooks/salesforce as Salesforce does: text/xml, SOAPAction, and the secret as
    basic auth (``auth`` "basic"), in the URL (``auth`` "token") or not at all (None)."""
    headers = {"SOAPAction": '""'}
    path = salesforce.PATH
    if auth == "basic":
        headers["Authorization"] = basic(secret)
    elif auth == "token":
        path += f"?token={secret}"
    return h.request(
        path, body, content_type="text/xml; charset=utf-8", headers=headers, signed=False
    )


def acked(reply) -> bool:
    """Whether the answer is Salesforce's Ack true (tests/crm_samples/salesforce/ack.xml)."""
    if reply.status != 200:
        return False
    root = ET.fromstring(reply.body)
    return root.findtext("soapenv:Body/om:notificationsResponse/om:Ack", namespaces=NS) == "true"


def fault_of(reply) -> str:
    root = ET.fromstring(reply.body)
    return root.findtext("soapenv:Body/soapenv:Fault/faultstring", namespaces=NS) or ""


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


def test_the_sample_and_the_ack_are_salesforces_shapes():
    ack = ET.fromstring((SAMPLES / "ack.xml").read_bytes())
    assert ack.findtext("soapenv:Body/om:notificationsResponse/om:Ack", namespaces=NS) == "true"
    assert (
        ET.fromstring(salesforce.ACK).findtext(
            "soapenv:Body/om:notificationsResponse/om:Ack", namespaces=NS
        )
        == "true"
    )
    # The helpers build what the sample is.
    assert message() == SAMPLE.encode()
    assert message(notification()) == SAMPLE.encode()


# --- authentication -----------------------------------------------------------------------


def test_wrong_credentials_or_another_org_are_401_and_nothing_is_stored(harness):
    h = harness
    h.clock.set(CLOSED + timedelta(hours=1))
    refused = [
        post_salesforce(h, message(), auth=None),
        post_salesforce(h, message(), secret="not-the-secret-at-all"),
        post_salesforce(h, message(), auth="token", secret="not-the-secret-at-all"),
        post_salesforce(h, message(), secret=SECRET[:-1]),
        post_salesforce(h, message(), secret=SECRET + "x"),
        # The right secret, but another org's message (pointed at this URL).
        post_salesforce(h, message(org="00D5g000009ZZZZEAV")),
        post_salesforce(h, message(org="")),
    ]
    for reply in refused:
        assert reply.status == 401, reply.body
        assert "Fault" in reply.body and not acked(reply)
    assert "OrganizationId" in fault_of(refused[-2])
    for header in (
        "Bearer " + SECRET,
        "Basic !!!",
        "Basic " + base64.b64encode(SECRET.encode()).decode(),
    ):
        reply = h.request(
            salesforce.PATH,
            message(),
            content_type="text/xml",
            headers={"Authorization": header},
            signed=False,
        )
        assert reply.status == 401, header
    assert deliveries(h) == [] and deals(h) == []
    assert h.slack.calls_to("chat.postMessage") == []
    # The secret is checked before the XML is read: an unauthenticated bomb is just a 401.
    assert post_salesforce(h, BILLION_LAUGHS, auth=None).status == 401
    # The same org as 15 or 18 characters, the secret as basic auth or in the URL: accepted.
    assert acked(post_salesforce(h, message()))
    assert acked(post_salesforce(h, message(), auth="token"))


@pytest.mark.parametrize(
    "settings_overrides",
    [{"SALESFORCE_ORG_ID": None, "SALESFORCE_WEBHOOK_SECRET": None}],
    indirect=True,
)
def test_without_its_settings_the_endpoint_answers_503_saying_what_to_set(harness):
    reply = post_salesforce(harness, message())
    assert reply.status == 503 and "SALESFORCE_ORG_ID" in fault_of(reply)
    assert deliveries(harness) == []


def test_the_secret_in_the_url_is_never_logged(harness, caplog):
    caplog.set_level(logging.DEBUG)
    h = harness
    h.clock.set(CLOSED + timedelta(hours=1))
    assert acked(post_salesforce(h, message(), auth="token"))
    post_salesforce(h, message(), auth="token", secret="wrong-secret-1234567890")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/hooks/salesforce" in text
    assert SECRET not in text and "wrong-secret-1234567890" not in text
    (delivery,) = deliveries(h)
    assert SECRET not in json.dumps(delivery.headers) and SECRET not in delivery.body


# --- XML that is not Salesforce's ---------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound">
<OrganizationId>00D5g000004ABCDEAV</OrganizationId><ActionId>&lol9;</ActionId>
</notifications></soapenv:Body></soapenv:Envelope>"""


def _with_doctype(doctype: str, field: str) -> bytes:
    """The sample with ``doctype`` before its root and ``field`` as the opportunity's name."""
    text = SAMPLE.replace("<soapenv:Envelope", doctype + "\n<soapenv:Envelope", 1)
    return text.replace("<sf:Name>Acme renewal</sf:Name>", f"<sf:Name>{field}</sf:Name>").encode()


UNSAFE = {
    "billion laughs": BILLION_LAUGHS,
    "external entity": _with_doctype(
        '<!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', "&xxe;"
    ),
    "external DTD": _with_doctype('<!DOCTYPE e SYSTEM "http://127.0.0.1:9/evil.dtd">', "x"),
    "parameter entity": _with_doctype(
        '<!DOCTYPE e [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>', "x"
    ),
    "quadratic blowup": _with_doctype(
        f'<!DOCTYPE e [<!ENTITY a "{"a" * 50_000}">]>', "&a;" * 1_000
    ),
    "in UTF-16": _with_doctype('<!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', "&xxe;")
    .decode()
    .replace('encoding="UTF-8"', 'encoding="UTF-16"')
    .encode("utf-16"),
}


@pytest.mark.parametrize("name", list(UNSAFE))
def test_xml_bombs_and_external_entities_are_refused_quickly_without_expansion(name):
    started = time.perf_counter()
    with pytest.raises(salesforce.UnsafeXml):
        salesforce.parse_xml(UNSAFE[name])
    assert time.perf_counter() - started < 0.5


def test_unsafe_or_malformed_messages_are_400_and_store_nothing(harness):
    h = harness
    h.clock.set(CLOSED + timedelta(hours=1))
    started = time.perf_counter()
    for name, body in UNSAFE.items():
        reply = post_salesforce(h, body)
        assert reply.status == 400, (name, reply.body)
        assert "DOCTYPE" in fault_of(reply)
    assert time.perf_counter() - started < 5
    nested = b"<a>" * 1000 + b"</a>" * 1000
    too_many = message(*(notification(f"04l5g00000N{i:05d}AAA") for i in range(101)))
    for body in (
        b"not xml at all",
        b"<soapenv:Envelope",  # cut short
        b'<?xml version="1.0"?><x>&undefined;</x>',
        nested,
        json.dumps({"Id": OPP_ID}).encode(),
        b"<Envelope><Body><notifications/></Body></Envelope>",  # no SOAP namespace
        too_many,
        message(notification(Id=DROP)),  # a record without its Id
        message(notification().replace(f"<Id>{NOTE_ID}</Id>", "")),  # no notification Id
        SAMPLE.encode().replace(b"Acme renewal", b"Acme\x00"),
    ):
        reply = post_salesforce(h, body)
        assert reply.status == 400, (body[:60], reply.body)
        assert "soapenv:Client" in reply.body
    assert deliveries(h) == []
    # Longer than the cap: 413, read no further.
    huge = message(notification(Description="x" * salesforce.MAX_BODY))
    assert post_salesforce(h, huge).status == 413
    assert deliveries(h) == []


# --- end to end ---------------------------------------------------------------------------


def test_salesforce_to_the_owners_dm_and_the_modal_shows_salesforces_reason(harness):
    h, slack = harness, harness.slack
    h.clock.set(CLOSED + timedelta(hours=15))

    reply = post_salesforce(h, message())
    assert acked(reply), reply.body
    (delivery,) = deliveries(h)
    assert delivery.source == "salesforce" and delivery.state == InboxState.DONE
    assert delivery.delivery_id == f"{OPP_ID}:{NOTE_ID}"
    assert delivery.headers["soapaction"] == '""' and "authorization" not in delivery.headers
    assert delivery.headers["content-type"] == "text/xml; charset=utf-8"
    stored_body = json.loads(delivery.body)
    assert stored_body["organization_id"] == ORG_18 and stored_body["notification_id"] == NOTE_ID
    assert stored_body["fields"]["StageName"] == "Closed Lost"
    assert stored_body["xml"] == _NOTIFICATION.strip()  # the notification as sent

    (deal,) = deals(h)
    assert deal.external_id == f"salesforce:{OPP_ID}" and deal.outcome == "lost"
    assert deal.name == "Acme renewal" and str(deal.amount) == "12000.00"
    assert deal.owner_email == "ana@example.com" and deal.crm_reason == "Price"
    assert deal.closed_at == CLOSED and deal.owner_user_id == "UANA"

    (nudge,) = nudges_to(slack, "UANA")
    assert "Acme renewal" in all_text(nudge.params)

    # The modal: Salesforce's loss reason is a note beside the field, never in it.
    h.click_button("UANA", stored(slack, nudge), nudge.response["channel"], "winloss_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    (note,) = [b for b in modal["blocks"] if b.get("block_id") == "crm_note"]
    assert "Price" in json.dumps(note)
    values = fill(modal)
    assert values["reason"] is None and values["outcome"] == "lost"

    accepted = submit_winloss(
        h, "UANA", modal, fill(modal, reason=QUOTE, reason_category="Price", insight="ROI")
    )
    assert accepted.status == 200
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(WinLossEntry.reason)).one() == QUOTE
    assert count(h, WinLossEntry) == 1 and len(posts_in(slack, "CWINLOSS")) == 1


def test_a_message_in_utf16_is_taken_without_its_xml_as_sent(harness):
    h = harness
    h.clock.set(CLOSED + timedelta(hours=1))
    body = SAMPLE.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    assert acked(post_salesforce(h, body))
    (delivery,) = deliveries(h)
    assert json.loads(delivery.body)["xml"] is None and len(deals(h)) == 1


def test_the_same_delivery_twice_is_one_dm(harness):
    h = harness
    h.clock.set(CLOSED + timedelta(hours=1))
    assert acked(post_salesforce(h, message()))
    # Salesforce re-delivers the notification, once with the secret in the URL, once batched
    # with a new notification about the same opportunity (the same data).
    assert acked(post_salesforce(h, message(), auth="token"))
    assert acked(post_salesforce(h, message(notification(), notification("04l5g00000AbCdFAAV"))))
    assert len(deliveries(h)) == 2
    assert [d.state for d in deliveries(h)] == [InboxState.DONE, InboxState.DONE]
    assert "already received" in deliveries(h)[1].note
    assert len(deals(h)) == 1 and len(nudges_to(h.slack, "UANA")) == 1


def test_a_stage_that_is_not_closed_is_acked_and_nothing(harness):
    h = harness
    h.clock.set(CLOSED)
    open_stage = notification(
        StageName="Negotiation/Review", IsClosed="false", IsWon="false", Loss_Reason__c=None
    )
    assert acked(post_salesforce(h, message(open_stage)))
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.DONE and "not closed" in delivery.note
    # A notification on another object (the same message sent for Accounts) is Ack'd too.
    account = notification("04l5g00000AcCtAAAV").replace("sf:Opportunity", "sf:Account")
    assert acked(post_salesforce(h, message(account)))
    assert len(deliveries(h)) == 1
    assert deals(h) == [] and h.slack.calls_to("chat.postMessage") == []


def test_a_message_without_isclosed_is_acked_and_kept_failed_naming_the_field(harness):
    h = harness
    h.clock.set(CLOSED)
    assert acked(post_salesforce(h, message(notification(IsClosed=DROP))))
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.FAILED and "IsClosed" in delivery.last_error
    assert deals(h) == []


@pytest.mark.parametrize(
    "settings_overrides",
    [{"SALESFORCE_OWNERS": "0055g00000BeN02AAB=U0NOBODY,005000000000777=ben@example.com"}],
    indirect=True,
)
def test_an_unknown_owner_goes_to_the_managers_channel(harness):
    h, slack = harness, harness.slack
    h.clock.set(CLOSED)
    post_salesforce(
        h,
        message(
            # An owner whose email Slack does not know.
            notification(
                "04l5g00000Own01AAA", Id="0065g00000Opp01AAA", Owner_Email__c="gone@example.com"
            ),
            # No owner field, an OwnerId not mapped.
            notification("04l5g00000Own02AAA", Id="0065g00000Opp02AAA", Owner_Email__c=DROP),
            # No owner field, an OwnerId mapped to a Slack user Slack does not know.
            notification(
                "04l5g00000Own03AAA",
                Id="0065g00000Opp03AAA",
                Owner_Email__c=None,
                OwnerId="0055g00000BeN02AAB",
            ),
            # No owner field, an OwnerId (15 characters here) mapped to ben's email.
            notification(
                "04l5g00000Own04AAA",
                Id="0065g00000Opp04AAA",
                Owner_Email__c=DROP,
                OwnerId="005000000000777",
            ),
        ),
    )
    reports = posts_in(slack, "CMGR")
    assert len(reports) == 3
    assert sum("gone@example.com" in r.params["text"] for r in reports) == 1
    assert dms_to(slack, "UANA") == []
    assert len(nudges_to(slack, "UBEN")) == 1
    assert len(deals(h)) == 4
    tick(h.rt)
    assert len(posts_in(slack, "CMGR")) == 3


def test_reordered_deliveries_end_in_the_latest_state(harness):
    h, slack = harness, harness.slack
    h.clock.set(CLOSED + timedelta(days=3))
    # Lost on the 20th, reopened, won on the 22nd: the later message arrives first.
    won = notification(
        "04l5g00000Lat01AAA",
        StageName="Closed Won",
        IsWon="true",
        CloseDate="2026-11-22",
        LastModifiedDate="2026-11-22T09:00:00.000Z",
        Win_Reason__c="Onboarding speed",
        Amount="15000",
    )
    assert acked(post_salesforce(h, message(won)))
    assert acked(post_salesforce(h, message()))  # the older one: lost
    (deal,) = deals(h)
    assert deal.outcome == "won" and deal.crm_reason == "Onboarding speed"
    assert str(deal.amount) == "15000.00"
    assert "superseded" in deliveries(h)[1].note
    assert len(nudges_to(slack, "UANA")) == 1
    # Without a modification time on the message, the later CloseDate wins; then a re-close
    # before the rep logged it brings the deal up to date, nobody is asked twice.
    lost_again = notification(
        "04l5g00000Lat03AAA",
        LastModifiedDate=DROP,
        CloseDate="2026-11-23",
        Loss_Reason__c="Timing",
    )
    older = notification(
        "04l5g00000Lat02AAA", LastModifiedDate=DROP, StageName="Closed Won", IsWon="true"
    )
    post_salesforce(h, message(lost_again))
    post_salesforce(h, message(older))
    (deal,) = deals(h)
    assert deal.outcome == "lost" and deal.crm_reason == "Timing"
    assert len(nudges_to(slack, "UANA")) == 1


def test_reordered_within_one_message_and_a_later_open_stage(harness):
    h = harness
    h.clock.set(CLOSED + timedelta(days=3))
    reopened = notification(
        "04l5g00000Reo01AAA",
        StageName="Negotiation/Review",
        IsClosed="false",
        LastModifiedDate="2026-11-21T10:00:00.000Z",
    )
    # The reopening is later than the loss: the loss is superseded, nothing is asked.
    assert acked(post_salesforce(h, message(reopened, notification())))
    assert deals(h) == [] and h.slack.calls_to("chat.postMessage") == []
    notes = [d.note for d in deliveries(h)]
    assert "is not closed" in notes[0] and "superseded" in notes[1]


def test_a_crash_after_storing_loses_nothing(harness, monkeypatch):
    import bot.intake.deliveries as deliveries_mod

    h = harness
    h.clock.set(CLOSED + timedelta(hours=1))
    real = deliveries_mod.process
    monkeypatch.setattr(deliveries_mod, "process", lambda rt, pks: None)
    assert acked(post_salesforce(h, message()))
    assert deals(h) == []
    monkeypatch.setattr(deliveries_mod, "process", real)
    tick(h.another_process())
    assert len(nudges_to(h.slack, "UANA")) == 1


# --- settings -----------------------------------------------------------------------------

BASE = {
    "SLACK_BOT_TOKEN": "xoxb-1",
    "SLACK_SIGNING_SECRET": "s",
    "FEEDBACK_CHANNEL": "C1",
    "SALES_USERS": "U1",
    "MARKETING_USERS": "U2",
}


def test_salesforce_is_off_until_the_org_and_the_secret_are_both_set():
    off = Settings.from_env(BASE)
    assert not off.salesforce_configured and off.salesforce_owner_field == "Owner_Email__c"
    on = Settings.from_env(
        {
            **BASE,
            "SALESFORCE_ORG_ID": ORG_18,
            "SALESFORCE_WEBHOOK_SECRET": SECRET,
            "SALESFORCE_OWNERS": "0055g00000AnA01AAB=Ana@Example.com, 005000000000777=U0BEN",
            "SALESFORCE_OWNER_FIELD": "Rep_Email__c",
        }
    )
    assert on.salesforce_configured and on.salesforce_owner_field == "Rep_Email__c"
    assert dict(on.salesforce_owners) == {
        "0055g00000AnA01": "ana@example.com",
        "005000000000777": "U0BEN",
    }
    assert SECRET not in repr(on)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SALESFORCE_ORG_ID": ORG_15}, "SALESFORCE_WEBHOOK_SECRET"),
        ({"SALESFORCE_WEBHOOK_SECRET": SECRET}, "SALESFORCE_ORG_ID"),
        ({"SALESFORCE_ORG_ID": "acme", "SALESFORCE_WEBHOOK_SECRET": SECRET}, "SALESFORCE_ORG_ID"),
        ({"SALESFORCE_ORG_ID": ORG_15, "SALESFORCE_WEBHOOK_SECRET": "short"}, "SECRET"),
        ({"SALESFORCE_ORG_ID": ORG_15, "SALESFORCE_WEBHOOK_SECRET": "a b" * 9}, "SECRET"),
        ({"SALESFORCE_OWNERS": "ana@example.com"}, "SALESFORCE_OWNERS"),
        ({"SALESFORCE_OWNERS": "0055g00000AnA01AAB=ana"}, "SALESFORCE_OWNERS"),
        ({"SALESFORCE_OWNER_FIELD": "Owner.Email"}, "SALESFORCE_OWNER_FIELD"),
    ],
)
def test_bad_salesforce_settings_are_one_line_naming_the_variable(env, named):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**BASE, **env})
    (line,) = err.value.lines
    assert named in line and SECRET not in line


def test_which_delivery_is_later():
    def version(pk, closed="true", **fields):
        return salesforce._version({"IsClosed": closed, **fields}, pk)

    a = version(2, LastModifiedDate="2026-11-20T14:00:00.000Z", CloseDate="2026-11-25")
    b = version(1, SystemModstamp="2026-11-20T15:00:00Z", CloseDate="2026-11-20")
    assert b.later_than(a) and not a.later_than(b)  # the modification time first
    naive = version(0, LastModifiedDate="2026-11-20T16:00:00", CloseDate="2026-11-20")
    assert naive.later_than(b)  # taken as UTC, never a naive/aware comparison
    c = version(0, CloseDate="2026-11-21")
    assert c.later_than(b) and not b.later_than(c)  # without both times, the later close
    d = version(5, CloseDate="2026-11-21", LastModifiedDate="garbage")
    assert d.later_than(c) and not c.later_than(d)  # then the one received later
    # An open opportunity's CloseDate is a forecast: lost on the 20th, reopened and moved to
    # December, then won on the 1st: without times, the order received decides.
    lost = version(1, CloseDate="2026-11-20")
    reopened = version(2, closed="false", CloseDate="2026-12-15")
    won = version(3, CloseDate="2026-12-01")
    assert won.later_than(reopened) and reopened.later_than(lost) and won.later_than(lost)
