"""Leads from Pipedrive end to end: a webhooks v2 delivery about a lead (tests/crm_samples/
pipedrive/webhook_lead_added.json) -> POST /hooks/pipedrive (basic auth, the real WSGI server)
-> the delivery stored -> the person, organization and owner read from the fake Pipedrive ->
the lead taken once and its owner's DM queued (asserted on the outbox row)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from bot.models import InboxState
from tests.fakepipedrive import sample as pd_sample
from tests.harness import tick
from tests.test_lead_hook import lead_dms, leads
from tests.test_pipedrive import (  # noqa: F401 - fixtures
    PD_TOKEN,
    basic,
    deals,
    deliveries,
    fake_pipedrive,
    post_pipedrive,
    settings_overrides,
)

LEAD_ID = "b1c2d3e4-f5a6-11ef-9a1b-2d3e4f5a6b7c"
HANDED = datetime(2026, 11, 24, 9, 55, tzinfo=UTC)  # the sample's meta.timestamp


@pytest.fixture
def pipedrive(fake_pipedrive):  # noqa: F811 - the fixture imported above
    fake_pipedrive.set_person("23")
    fake_pipedrive.set_organization("17")
    fake_pipedrive.add_user("43", "ben@example.com")
    return fake_pipedrive


def lead_event(*, event_id: str | None = None, data=None, previous=None, action=None, ts=None):
    """The sample (a lead created by marketing for owner 42), with what a test changes."""
    body = copy.deepcopy(pd_sample("webhook_lead_added.json"))
    if event_id is not None:
        body["meta"]["id"] = event_id
    if action is not None:
        body["meta"]["action"] = action
    if ts is not None:
        body["meta"]["timestamp"] = ts
    body["data"].update(data or {})
    if previous is not None:
        body["previous"] = previous
    return body


def test_a_lead_created_for_a_salesperson_is_taken_and_its_owner_asked(harness, pipedrive):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    reply = post_pipedrive(h, lead_event())
    assert reply.status == 200, reply.body
    assert reply.json() == {"ok": True, "stored": 1, "duplicates": 0, "ignored": 0}
    (delivery,) = deliveries(h)
    assert delivery.delivery_id == f"lead:{LEAD_ID}:9f8e7d6c-5b4a-4c3d-9e2f-1a0b9c8d7e6f"
    assert delivery.state == InboxState.DONE and "received" in delivery.note
    paths = sorted(c.path for c in pipedrive.calls)
    assert paths == ["/api/v1/organizations/17", "/api/v1/persons/23", "/api/v1/users/42"]
    assert {c.token_header for c in pipedrive.calls} == {PD_TOKEN}
    (lead,) = leads(h)
    assert lead.external_id == f"pipedrive:lead:{LEAD_ID}" and lead.origin == "crm"
    assert (lead.person, lead.email, lead.title) == (
        "Dana Whitfield",
        "dana@northwind.example",  # the primary one
        "VP Operations",
    )
    assert (lead.company, lead.source) == ("Northwind Traders", "Web forms")
    assert lead.context == "Northwind Traders lead: 400 seats, asked about SSO"
    assert lead.handed_at.replace(tzinfo=UTC) == HANDED
    assert lead.owner_email == "ana@example.com" and lead.owner_user_id == "UANA"
    (dm,) = lead_dms(h)
    assert (dm.key, dm.channel) == (f"lead-nudge:{lead.id}", "UANA")
    assert deals(h) == []


def test_the_same_delivery_twice_is_one_lead_and_one_dm(harness, pipedrive):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    assert post_pipedrive(h, lead_event()).json()["stored"] == 1
    retry = lead_event()
    retry["meta"]["attempt"] = 2  # Pipedrive's retry: the same meta.id
    assert post_pipedrive(h, retry).json()["duplicates"] == 1
    tick(h.rt)
    assert len(leads(h)) == 1 and len(lead_dms(h)) == 1


def test_leads_nobody_handed_over_are_200_and_nothing(harness, pipedrive):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    own = lead_event(event_id="e1", data={"creator_id": 42})  # a salesperson's own lead
    edited = lead_event(
        event_id="e2", action="change", previous={"title": "Northwind lead"}
    )  # an edit that leaves the owner
    archived = lead_event(event_id="e3", data={"is_archived": True})
    for body in (own, edited, archived):
        reply = post_pipedrive(h, body)
        assert reply.status == 200 and reply.json()["ignored"] == 1, reply.body
    assert deliveries(h) == [] and leads(h) == [] and pipedrive.calls == []


def test_a_lead_reassigned_later_is_handed_to_its_new_owner(harness, pipedrive):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    mine = lead_event(data={"creator_id": 43, "owner_id": 43})  # marketing's own, at first
    assert post_pipedrive(h, mine).json()["ignored"] == 1
    reassigned = lead_event(
        event_id="e-assign",
        action="change",
        data={"creator_id": 43, "owner_id": 42},
        previous={"owner_id": 43},
        ts="2026-11-24T09:58:00.000Z",
    )
    assert post_pipedrive(h, reassigned).json()["stored"] == 1
    (lead,) = leads(h)
    assert lead.owner_user_id == "UANA"
    assert lead.handed_at.replace(tzinfo=UTC) == HANDED + timedelta(minutes=3)
    assert len(lead_dms(h)) == 1


def test_reordered_hand_offs_make_one_lead_for_the_latest_owner(harness, pipedrive, monkeypatch):
    """The reassignment to ben arrives first, the creation for ana (older) after it; both
    stored before either is processed (the process died, the tick does them)."""
    import bot.intake.deliveries as deliveries_mod

    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    real = deliveries_mod.process
    monkeypatch.setattr(deliveries_mod, "process", lambda rt, pks: None)
    newer = lead_event(
        event_id="e-newer",
        action="change",
        data={"owner_id": 43},
        previous={"owner_id": 42},
        ts="2026-11-24T09:57:00.000Z",
    )
    assert post_pipedrive(h, newer).json()["stored"] == 1
    assert post_pipedrive(h, lead_event()).json()["stored"] == 1
    monkeypatch.setattr(deliveries_mod, "process", real)
    tick(h.another_process())
    (lead,) = leads(h)
    assert lead.owner_email == "ben@example.com" and lead.owner_user_id == "UBEN"
    assert any("superseded" in (d.note or "") for d in deliveries(h))
    assert len(lead_dms(h)) == 1


def test_wrong_credentials_are_401_and_nothing_is_stored(harness, pipedrive):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    for auth in (basic(password="wrong"), ""):
        reply = post_pipedrive(h, lead_event(), authorization=auth)
        assert reply.status == 401
    assert deliveries(h) == [] and leads(h) == [] and pipedrive.calls == []


def test_pipedrive_down_keeps_the_delivery_until_it_can_be_read(harness, pipedrive):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    pipedrive.down = True
    assert post_pipedrive(h, lead_event()).json()["stored"] == 1
    assert deliveries(h)[0].state == InboxState.PENDING and leads(h) == []
    pipedrive.down = False
    h.clock.advance(minutes=2)
    tick(h.rt)
    assert deliveries(h)[0].state == InboxState.DONE
    assert len(leads(h)) == 1 and len(lead_dms(h)) == 1


def test_a_lead_without_a_person_is_named_by_its_title(harness, pipedrive):
    h = harness
    h.clock.set(HANDED + timedelta(minutes=5))
    post_pipedrive(h, lead_event(data={"person_id": None, "organization_id": 99}))
    (lead,) = leads(h)
    assert lead.person == "Northwind Traders lead: 400 seats, asked about SSO"
    assert lead.company is None and lead.email is None  # organization 99 is not in Pipedrive
