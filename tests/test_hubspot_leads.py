"""Leads from HubSpot end to end: HubSpot's signed contact event -> POST /hooks/hubspot (the
real WSGI server) -> the delivery stored -> the contact read from the fake HubSpot API -> the
lead stored once and its owner's DM queued (the DM's rendering is another part's: asserted on
the outbox row)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from bot.models import InboxState
from tests.fakehubspot import sample as hs_sample
from tests.harness import tick
from tests.test_hubspot import (  # noqa: F401 - fixtures
    HS_TOKEN,
    deals,
    deliveries,
    fake_hubspot,
    post_hubspot,
    settings_overrides,
)
from tests.test_lead_hook import lead_dms, leads

HANDED = datetime(2026, 11, 24, 9, 55, tzinfo=UTC)  # the sample event's occurredAt


def contact_events(*changes: dict) -> list[dict]:
    """A Webhooks API delivery: the sample contact event, once per ``changes``."""
    base = hs_sample("webhook_contact_lifecycle_change.json")[0]
    return [{**copy.deepcopy(base), **change} for change in changes]


@pytest.fixture
def contact(fake_hubspot):  # noqa: F811 - the fixture imported above
    fake_hubspot.set_contact("5101")  # an MQL owned by 42 (ana@example.com): the sample
    return fake_hubspot


def test_a_contact_becoming_mql_is_a_lead_and_its_owner_is_asked(harness, contact):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    reply = post_hubspot(h, contact_events({}))
    assert reply.status == 200, reply.body
    assert reply.json() == {"ok": True, "stored": 1, "duplicates": 0, "ignored": 0}

    (delivery,) = deliveries(h)
    assert delivery.delivery_id == "contact:5101:3041077125"
    assert delivery.state == InboxState.DONE and "lead" in delivery.note
    # The contact read with the private app's token, then its owner.
    paths = [c.path for c in contact.calls]
    assert paths == ["/crm/v3/objects/contacts/5101", "/crm/v3/owners/42"]
    assert {c.authorization for c in contact.calls} == {f"Bearer {HS_TOKEN}"}
    asked = contact.calls[0].query["properties"][0].split(",")
    assert {"lifecyclestage", "hubspot_owner_id", "hs_analytics_source", "jobtitle"} <= set(asked)

    (lead,) = leads(h)
    assert lead.external_id == "hubspot:contact:5101" and lead.origin == "crm"
    assert (lead.person, lead.email) == ("Dana Whitfield", "dana@northwind.example")
    assert (lead.company, lead.title) == ("Northwind Traders", "VP Operations")
    assert (lead.source, lead.campaign) == ("Paid search", "google")  # the original source
    assert lead.owner_email == "ana@example.com" and lead.owner_user_id == "UANA"
    assert lead.handed_at.replace(tzinfo=UTC) == HANDED  # the SLA counts from HubSpot's event
    (dm,) = lead_dms(h)
    assert (dm.key, dm.channel) == (f"lead-nudge:{lead.id}", "UANA")
    assert deals(h) == []


def test_the_same_event_twice_and_other_events_about_it_are_one_lead_and_one_dm(harness, contact):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    assert post_hubspot(h, contact_events({})).json()["stored"] == 1
    # HubSpot's retry (the same eventId), batched with the owner's change about the same contact.
    again = post_hubspot(
        h,
        contact_events(
            {"attemptNumber": 1},
            {"eventId": 3041077126, "propertyName": "hubspot_owner_id", "propertyValue": "42"},
        ),
    )
    assert again.json() == {"ok": True, "stored": 1, "duplicates": 1, "ignored": 0}
    tick(h.rt)
    assert len(leads(h)) == 1 and len(lead_dms(h)) == 1
    assert all(d.state == InboxState.DONE for d in deliveries(h))
    assert "already received" in deliveries(h)[1].note


def test_a_stage_that_is_not_mql_is_200_and_nothing(harness, contact):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    # Another stage in the event: answered and dropped, HubSpot not read.
    reply = post_hubspot(h, contact_events({"propertyValue": "salesqualifiedlead"}))
    assert reply.status == 200
    assert reply.json() == {"ok": True, "stored": 0, "duplicates": 0, "ignored": 1}
    # An owner removed, another property: dropped too.
    other = post_hubspot(
        h,
        contact_events(
            {"eventId": 2, "propertyName": "hubspot_owner_id", "propertyValue": ""},
            {"eventId": 3, "propertyName": "firstname", "propertyValue": "Dan"},
        ),
    )
    assert other.json()["ignored"] == 2
    # MQL in the event, but no longer when read (moved back to lead): nothing.
    contact.set_contact("5101", lifecyclestage="lead")
    assert post_hubspot(h, contact_events({"eventId": 4})).json()["stored"] == 1
    assert contact.calls_to("/crm/v3/objects/contacts")
    assert leads(h) == [] and lead_dms(h) == []
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.DONE and "is not marketingqualifiedlead" in delivery.note


def test_an_mql_given_its_owner_later_is_handed_over_then(harness, contact):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    contact.set_contact("5101", hubspot_owner_id=None)
    post_hubspot(h, contact_events({}))
    assert leads(h) == [] and "no owner yet" in deliveries(h)[0].note
    contact.set_contact("5101", hubspot_owner_id="42")
    assigned_ms = int((HANDED + timedelta(minutes=3)).timestamp() * 1000)
    reply = post_hubspot(
        h,
        contact_events(
            {
                "eventId": 77,
                "propertyName": "hubspot_owner_id",
                "propertyValue": "42",
                "occurredAt": assigned_ms,
            }
        ),
    )
    assert reply.json()["stored"] == 1
    (lead,) = leads(h)
    assert lead.owner_user_id == "UANA"
    assert lead.handed_at.replace(tzinfo=UTC) == HANDED + timedelta(minutes=3)
    assert len(lead_dms(h)) == 1


def test_reordered_events_do_not_make_two_leads(harness, contact):
    """The owner's event arrives before the stage's (HubSpot batches as it pleases): the
    contact is read as it is now each time; one lead."""
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    owner = {"eventId": 20, "propertyName": "hubspot_owner_id", "propertyValue": "42"}
    post_hubspot(h, contact_events(owner))
    post_hubspot(
        h, contact_events({"eventId": 10}, {"eventId": 30, "subscriptionType": "contact.creation"})
    )
    assert len(deliveries(h)) == 3
    assert len(leads(h)) == 1 and len(lead_dms(h)) == 1


def test_a_bad_signature_is_401_and_nothing_is_stored(harness, contact):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    for reply in (
        post_hubspot(h, contact_events({}), secret="not-the-secret"),
        post_hubspot(h, contact_events({}), version=None),
    ):
        assert reply.status == 401
    assert deliveries(h) == [] and leads(h) == [] and contact.calls == []


def test_hubspot_refusing_contacts_keeps_the_delivery_until_it_can(harness, contact, caplog):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    contact.scopes.discard("crm.objects.contacts.read")
    assert post_hubspot(h, contact_events({})).json()["stored"] == 1
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.PENDING and "403" in delivery.last_error
    assert "crm.objects.contacts.read" in caplog.text
    contact.scopes.add("crm.objects.contacts.read")
    h.clock.advance(minutes=2)
    tick(h.rt)
    assert deliveries(h)[0].state == InboxState.DONE
    assert len(leads(h)) == 1 and len(lead_dms(h)) == 1


@pytest.mark.parametrize(
    "settings_overrides",
    [{"HUBSPOT_CLIENT_SECRET": None, "HUBSPOT_ACCESS_TOKEN": None}],
    indirect=True,
)
def test_hubspot_off_stores_no_lead(harness):
    reply = post_hubspot(harness, contact_events({}))
    assert reply.status == 503
    assert leads(harness) == []
