"""Leads from Salesforce end to end: an Outbound Message on a Lead (tests/crm_samples/
salesforce/notifications_lead.xml) -> POST /hooks/salesforce (the real WSGI server) -> the
notification stored -> the lead taken once when its owner is a user (not a queue) and the
owner's DM queued (asserted on the outbox row: its rendering is another part's)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.models import InboxState
from tests.harness import tick
from tests.test_lead_hook import lead_dms, leads
from tests.test_salesforce import (  # noqa: F401 - the fixture
    acked,
    deals,
    deliveries,
    fault_of,
    message,
    notification,
    post_salesforce,
    settings_overrides,
    with_fields,
)

SAMPLE = (
    Path(__file__).parent / "crm_samples" / "salesforce" / "notifications_lead.xml"
).read_text()
_NOTIFICATION = re.search(r" *<Notification>.*?</Notification>\n", SAMPLE, re.S).group()  # type: ignore[union-attr]
NOTE_ID = "04l5g00000LeAd1AAB"
LEAD_ID = "00Q5g00000DaNa1EAF"
QUEUE_ID = "00G5g00000SaLeQEAV"
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def lead_notification(note_id: str = NOTE_ID, **fields: str | None) -> str:
    """The sample's Lead notification, its id and fields changed (None: xsi:nil)."""
    return with_fields(_NOTIFICATION.replace(NOTE_ID, note_id), **fields)


def lead_message(*notifications: str) -> bytes:
    head, tail = SAMPLE.split(_NOTIFICATION)
    return (head + "".join(notifications or (_NOTIFICATION,)) + tail).encode()


def test_a_lead_assigned_to_a_salesperson_is_taken_and_its_owner_asked(harness):
    h = harness
    h.clock.set(NOW)
    reply = post_salesforce(h, lead_message(), auth="token")
    assert acked(reply), reply.body
    (delivery,) = deliveries(h)
    assert delivery.delivery_id == f"{LEAD_ID}:{NOTE_ID}"
    assert delivery.state == InboxState.DONE and "received" in delivery.note
    (lead,) = leads(h)
    assert lead.external_id == f"salesforce:{LEAD_ID}" and lead.origin == "crm"
    assert (lead.person, lead.email) == ("Dana Whitfield", "dana@northwind.example")
    assert (lead.company, lead.title, lead.source) == (
        "Northwind Traders",
        "VP Operations",
        "Webinar",
    )
    assert lead.context == "Asked about SSO twice; 400 seats."
    assert lead.owner_email == "ana@example.com" and lead.owner_user_id == "UANA"
    (dm,) = lead_dms(h)
    assert (dm.key, dm.channel) == (f"lead-nudge:{lead.id}", "UANA")
    assert deals(h) == []


def test_the_same_notification_twice_is_one_lead_and_one_dm(harness):
    h = harness
    h.clock.set(NOW)
    assert acked(post_salesforce(h, lead_message()))
    assert acked(post_salesforce(h, lead_message()))  # Salesforce re-sends under the same id
    # Another notification about the lead (edited later): the same lead, no second DM.
    later = lead_notification("04l5g00000LeAd2AAB", LastModifiedDate="2026-11-24T09:58:00.000Z")
    assert acked(post_salesforce(h, lead_message(later)))
    tick(h.rt)
    assert len(deliveries(h)) == 2
    assert len(leads(h)) == 1 and len(lead_dms(h)) == 1


def test_a_lead_owned_by_a_queue_is_acked_and_nothing(harness):
    h = harness
    h.clock.set(NOW)
    queued = lead_notification(OwnerId=QUEUE_ID, Owner_Email__c=None)
    assert acked(post_salesforce(h, lead_message(queued)))
    (delivery,) = deliveries(h)
    assert delivery.state == InboxState.DONE and "a queue" in delivery.note
    assert leads(h) == [] and lead_dms(h) == []
    # Assigned from the queue to a salesperson: the flow sends it again, and it is taken.
    assigned = lead_notification("04l5g00000LeAd3AAB", LastModifiedDate="2026-11-24T09:59:00Z")
    assert acked(post_salesforce(h, lead_message(assigned)))
    assert len(leads(h)) == 1 and len(lead_dms(h)) == 1


def test_reordered_notifications_make_one_lead_with_the_latest_owner(harness):
    """Salesforce retries out of order: the older message (owned by ben) arrives after the
    newer one (reassigned to ana), and both were stored before either was processed."""
    h = harness
    h.clock.set(NOW)
    newer = lead_notification("04l5g00000LeAd5AAB", LastModifiedDate="2026-11-24T09:58:00Z")
    older = lead_notification(
        "04l5g00000LeAd4AAB",
        LastModifiedDate="2026-11-24T09:50:00Z",
        Owner_Email__c="ben@example.com",
        OwnerId="0055g00000BeN02AAB",
    )
    assert acked(post_salesforce(h, lead_message(older, newer)))
    (lead,) = leads(h)
    assert lead.owner_email == "ana@example.com"
    notes = sorted(d.note for d in deliveries(h))
    assert any("superseded" in n for n in notes)
    assert len(lead_dms(h)) == 1


def test_wrong_credentials_or_org_are_401_and_nothing_is_stored(harness):
    h = harness
    h.clock.set(NOW)
    assert post_salesforce(h, lead_message(), secret="wrong").status == 401
    assert post_salesforce(h, lead_message(), auth=None).status == 401
    other_org = lead_message().replace(b"00D5g000004ABCDEAV", b"00D5g000009ZZZZEAV")
    reply = post_salesforce(h, other_org)
    assert reply.status == 401 and "OrganizationId" in fault_of(reply)
    assert deliveries(h) == [] and leads(h) == []


def test_an_opportunity_and_a_lead_in_one_message_each_do_their_part(harness):
    h = harness
    h.clock.set(datetime(2026, 11, 20, 14, 5, tzinfo=UTC))
    body = message(notification(), lead_notification())
    assert acked(post_salesforce(h, body))
    assert len(deals(h)) == 1 and len(leads(h)) == 1
    assert {d.delivery_id.split(":")[0][:3] for d in deliveries(h)} == {"006", "00Q"}


@pytest.mark.parametrize(
    "settings_overrides",
    [{"SALESFORCE_OWNERS": "0055g00000AnA01=U0NOBODY"}],
    indirect=True,
)
def test_an_owner_without_the_email_field_comes_from_salesforce_owners(harness):
    h = harness
    h.clock.set(NOW)
    h.slack.add_user("U0NOBODY", tz="UTC", name="nobody")
    assert acked(post_salesforce(h, lead_message(lead_notification(Owner_Email__c=None))))
    (lead,) = leads(h)
    assert lead.owner_user_id == "U0NOBODY"
    assert len(lead_dms(h)) == 1 and lead_dms(h)[0].channel == "U0NOBODY"
    h.clock.advance(minutes=1)
    tick(h.rt)
    assert len(lead_dms(h)) == 1
