"""Lead write-back: a lead's latest rating set on its CRM record through the outbox (a HubSpot
contact's lead status, a Pipedrive lead's custom fields): written once per rating, the latest
after a change, retried and given up as the entries' write-back is, nothing for leads no CRM
with lead write-back holds; the fakes' refusals; the settings. From a Slack click: the last
test."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.config import ConfigError, Settings
from bot.db import session_scope
from bot.delivery import writeback
from bot.intake.hubspot_api import HubSpotApi, HubSpotError
from bot.intake.pipedrive_api import PipedriveApi, PipedriveError
from bot.jobs.leads import nudge_new_lead, receive_lead
from bot.models import LEAD_RATINGS, Lead, LeadStatus, Op, OutboxMessage, OutboxState
from bot.services import leads as lead_svc
from bot.services import outbox as outbox_svc
from bot.services.leads import LeadIn
from bot.services.outgoing import lead_record
from tests.fakehubspot import FakeHubSpot
from tests.fakepipedrive import FakePipedrive
from tests.test_leads_scenario import lead_dms, submit_view
from tests.test_loop_scenario import stored
from tests.test_writeback import row, writeback_sender

HS_TOKEN = "pat-na1-lead-writeback"
PD_TOKEN = "0123456789abcdef0123456789abcdef01234567"
STATUS = "hs_lead_status"
HS_REASON = "closeloop_reject_reason"
PD_RATING = "8f2b6c1d0e9a4b3c2d1e0f9a8b7c6d5e4f3a2b1c"
PD_REASON = "1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d9c0b"
LEAD_UUID = "adf21080-0e10-11eb-879b-05d71fb426ec"
BAD_DATA = "Bad data"  # one of the default reasons


@pytest.fixture
def fake_hubspot():
    fake = FakeHubSpot(token=HS_TOKEN)
    fake.start()
    fake.add_contact_property(HS_REASON)
    fake.set_contact("51")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_pipedrive():
    fake = FakePipedrive(token=PD_TOKEN)
    fake.start()
    fake.add_deal_field(PD_RATING, "Lead rating (Closeloop)", field_type="varchar")
    fake.add_deal_field(PD_REASON, "Lead rejected because (Closeloop)", field_type="varchar")
    fake.set_lead(LEAD_UUID)
    try:
        yield fake
    finally:
        fake.stop()


def hubspot_env(fake: FakeHubSpot) -> dict[str, str]:
    return {
        "HUBSPOT_CLIENT_SECRET": "hs-secret",
        "HUBSPOT_ACCESS_TOKEN": HS_TOKEN,
        "HUBSPOT_API_URL": fake.url,
        "HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY": STATUS,
        "HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY": HS_REASON,
    }


def pipedrive_env(fake: FakePipedrive) -> dict[str, str]:
    return {
        "PIPEDRIVE_WEBHOOK_USER": "closeloop",
        "PIPEDRIVE_WEBHOOK_PASSWORD": "pw",
        "PIPEDRIVE_API_TOKEN": PD_TOKEN,
        "PIPEDRIVE_API_URL": fake.url + "/api/v1",
        "PIPEDRIVE_WRITEBACK_LEAD_RATING_FIELD": PD_RATING,
        "PIPEDRIVE_WRITEBACK_LEAD_REASON_FIELD": PD_REASON,
    }


def settings_for(hubspot=None, pipedrive=None, **more) -> Settings:
    env = {"DATABASE_URL": "sqlite://"}
    if hubspot is not None:
        env.update(hubspot_env(hubspot))
    if pipedrive is not None:
        env.update(pipedrive_env(pipedrive))
    env.update(more)
    return Settings.from_env({k: v for k, v in env.items() if v is not None}, slack=False)


def hand_over(session, settings: Settings, external_id: str | None, now) -> int:
    lead, created = lead_svc.receive_lead(
        session,
        lead=LeadIn(external_id=external_id, person="Jo Park", owner_user_id="UANA"),
        s=settings.leads,
        default_tz="UTC",
        now=now,
        origin="crm" if external_id else "slack",
    )
    assert created
    return lead.id


def rate(session, settings: Settings, pk: int, rating: str, now, reason: str | None = None):
    return lead_svc.rate(
        session,
        lead_pk=pk,
        rating=rating,
        reason=reason,
        user_id="UANA",
        managers=(),
        reasons=settings.leads.reject_reasons,
        now=now,
        writeback=settings.lead_writeback_crms,
    )


def handed_and_rated(session_factory, clock, settings, external_id, rating, reason=None) -> int:
    with session_scope(session_factory) as s:
        pk = hand_over(s, settings, external_id, clock())
        rate(s, settings, pk, rating, clock(), reason)
    return pk


def bodies(calls) -> list[dict | None]:
    return [c.body for c in calls]


def test_a_rated_hubspot_lead_sets_its_contacts_lead_status_once(
    session_factory, clock, fake_hubspot
):
    settings = settings_for(hubspot=fake_hubspot)
    sender = writeback_sender(session_factory, clock, settings)
    pk = handed_and_rated(session_factory, clock, settings, "hubspot:contact:51", "accepted")
    sender.drain()
    sender.drain()
    (write,) = [c for c in fake_hubspot.calls if c.method == "PATCH"]
    assert write.path == "/crm/v3/objects/contacts/51" and write.status == 200
    assert write.authorization == f"Bearer {HS_TOKEN}"
    # accepted -> IN_PROGRESS; no rejection, so the reason property is cleared
    assert write.body == {"properties": {STATUS: "IN_PROGRESS", HS_REASON: ""}}
    assert fake_hubspot.contacts["51"]["properties"][STATUS] == "IN_PROGRESS"
    m = row(session_factory, f"lead-writeback:{pk}")
    assert (m.state, m.kind, m.op, m.channel) == (
        OutboxState.SENT,
        "lead_writeback",
        Op.CALL,
        "hubspot",
    )


def test_a_changed_rating_writes_the_latest_once_more(session_factory, clock, fake_hubspot):
    settings = settings_for(hubspot=fake_hubspot)
    sender = writeback_sender(session_factory, clock, settings)
    pk = handed_and_rated(session_factory, clock, settings, "hubspot:contact:51", "accepted")
    sender.drain()
    clock.advance(minutes=5)
    with session_scope(session_factory) as s:
        rate(s, settings, pk, "rejected", clock(), BAD_DATA)
    sender.drain()
    sender.drain()
    assert bodies(fake_hubspot.contact_writes("51")) == [
        {"properties": {STATUS: "IN_PROGRESS", HS_REASON: ""}},
        {"properties": {STATUS: "UNQUALIFIED", HS_REASON: BAD_DATA}},
    ]

    # Two changes before the write goes out: only the latest is written, once.
    clock.advance(minutes=5)
    with session_scope(session_factory) as s:
        rate(s, settings, pk, "accepted", clock())
        rate(s, settings, pk, "not_ready", clock())
    sender.drain()
    sender.drain()
    writes = fake_hubspot.contact_writes("51")
    assert len(writes) == 3
    assert writes[-1].body == {"properties": {STATUS: "BAD_TIMING", HS_REASON: ""}}

    # Changed while a write is under way with the rating it rendered: once that claim
    # records its write, the message is pending again and the newest rating goes out.
    clock.advance(minutes=1)
    with session_scope(session_factory) as s:
        rate(s, settings, pk, "accepted", clock())
    key = f"lead-writeback:{pk}"
    with session_scope(session_factory) as s:
        (claimed,) = outbox_svc.claim(s, owner="slow", now=clock(), limit=5, keys=[key])
    with session_scope(session_factory) as s:
        rate(s, settings, pk, "rejected", clock(), "Duplicate")
    assert row(session_factory, key).rearm
    with session_scope(session_factory) as s:
        assert outbox_svc.mark_sent(s, claimed, channel="hubspot", ts="51", now=clock())
    sender.drain()
    writes = fake_hubspot.contact_writes("51")
    assert len(writes) == 4  # the slow claim's write was never made here; the newest was
    assert writes[-1].body == {"properties": {STATUS: "UNQUALIFIED", HS_REASON: "Duplicate"}}
    assert row(session_factory, key).state == OutboxState.SENT


def test_a_429_or_5xx_is_retried_and_a_400_given_up(session_factory, clock, fake_hubspot):
    settings = settings_for(hubspot=fake_hubspot)
    sender = writeback_sender(session_factory, clock, settings)
    fake_hubspot.fail_writes(429, retry_after="7")
    fake_hubspot.fail_writes(503)
    pk = handed_and_rated(session_factory, clock, settings, "hubspot:contact:51", "accepted")
    key = f"lead-writeback:{pk}"
    sender.drain()
    m = row(session_factory, key)
    assert m.state == OutboxState.PENDING and m.not_before == clock() + timedelta(seconds=7)
    clock.advance(seconds=8)
    sender.drain()
    m = row(session_factory, key)
    assert m.state == OutboxState.PENDING and "503" in (m.last_error or "")
    clock.advance(minutes=2)
    sender.drain()
    assert row(session_factory, key).state == OutboxState.SENT
    assert [c.status for c in fake_hubspot.calls if c.method == "PATCH"] == [429, 503, 200]

    # A value the dropdown has no option for: HubSpot's 400 INVALID_OPTION, given up.
    wrong = settings_for(hubspot=fake_hubspot, HUBSPOT_WRITEBACK_LEAD_STATUSES="rejected=JUNK")
    with session_scope(session_factory) as s:
        rate(s, wrong, pk, "rejected", clock(), BAD_DATA)
    writeback_sender(session_factory, clock, wrong).drain()
    clock.advance(hours=1)
    writeback_sender(session_factory, clock, wrong).drain()
    m = row(session_factory, key)
    assert m.state == OutboxState.FAILED and "INVALID_OPTION" in (m.last_error or "")
    assert [c.status for c in fake_hubspot.calls if c.method == "PATCH"][3:] == [400]
    assert fake_hubspot.contacts["51"]["properties"][STATUS] == "IN_PROGRESS"


def test_a_contact_hubspot_does_not_have_is_given_up(session_factory, clock, fake_hubspot):
    settings = settings_for(hubspot=fake_hubspot)
    pk = handed_and_rated(session_factory, clock, settings, "hubspot:contact:404", "accepted")
    writeback_sender(session_factory, clock, settings).drain()
    m = row(session_factory, f"lead-writeback:{pk}")
    assert m.state == OutboxState.FAILED and "HTTP 404" in (m.last_error or "")


def test_a_pipedrive_lead_gets_its_rating_and_reason(session_factory, clock, fake_pipedrive):
    settings = settings_for(pipedrive=fake_pipedrive)
    sender = writeback_sender(session_factory, clock, settings)
    fake_pipedrive.fail_writes(502)
    pk = handed_and_rated(
        session_factory, clock, settings, f"pipedrive:lead:{LEAD_UUID}", "rejected", BAD_DATA
    )
    sender.drain()
    clock.advance(minutes=2)
    sender.drain()
    (write,) = fake_pipedrive.lead_writes(LEAD_UUID)
    assert write.method == "PATCH" and write.path == f"/api/v1/leads/{LEAD_UUID}"
    assert write.token_header == PD_TOKEN and write.query == {}
    assert write.body == {PD_RATING: "Rejected", PD_REASON: BAD_DATA}
    assert fake_pipedrive.leads[LEAD_UUID][PD_RATING] == "Rejected"
    with session_scope(session_factory) as s:
        rate(s, settings, pk, "not_ready", clock())
    sender.drain()
    assert fake_pipedrive.lead_writes()[-1].body == {PD_RATING: "Not ready", PD_REASON: None}
    assert fake_pipedrive.writes() == []  # no deal touched


def test_nothing_for_leads_no_crm_with_lead_writeback_holds(
    session_factory, clock, fake_hubspot, fake_pipedrive
):
    on = settings_for(hubspot=fake_hubspot)  # HubSpot's lead write-back on; Pipedrive's not
    entry_only = settings_for(  # HubSpot on with the entries' write-back only
        HUBSPOT_CLIENT_SECRET="s",
        HUBSPOT_ACCESS_TOKEN=HS_TOKEN,
        HUBSPOT_API_URL=fake_hubspot.url,
        HUBSPOT_WRITEBACK_REASON_PROPERTY="closeloop_customer_words",
    )
    assert entry_only.lead_writeback_crms == frozenset()
    with session_scope(session_factory) as s:
        for external_id in (
            None,  # handed over in Slack
            "generic:L-1",
            "salesforce:00Q5g00000AbCdEEAZ",
            f"pipedrive:lead:{LEAD_UUID}",
            "hubspot:deal:9001",  # not a contact
        ):
            rate(s, on, hand_over(s, on, external_id, clock()), "accepted", clock())
        rate(s, entry_only, hand_over(s, on, "hubspot:contact:51", clock()), "accepted", clock())
    writeback_sender(session_factory, clock, on).drain()
    with session_scope(session_factory) as s:
        assert s.scalars(select(OutboxMessage.kind).where(OutboxMessage.op == Op.CALL)).all() == []
        assert s.scalar(select(Lead).where(Lead.external_id == "generic:L-1")).status == (
            LeadStatus.ACCEPTED
        )
    assert [c for c in fake_hubspot.calls if c.method == "PATCH"] == []
    assert fake_pipedrive.lead_writes() == []


def test_turned_off_since_it_was_queued_drops_the_write(session_factory, clock, fake_hubspot):
    settings = settings_for(hubspot=fake_hubspot)
    pk = handed_and_rated(session_factory, clock, settings, "hubspot:contact:51", "accepted")
    off = settings_for(
        hubspot=fake_hubspot,
        HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY=None,
        HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY=None,
    )
    writeback_sender(session_factory, clock, off).drain()
    assert row(session_factory, f"lead-writeback:{pk}").state == OutboxState.DROPPED
    assert fake_hubspot.contact_writes() == []


def test_the_lead_record_of_an_external_id():
    crms = {"hubspot", "pipedrive"}
    assert lead_record("hubspot:contact:51", crms) == ("hubspot", "51")
    assert lead_record(f"pipedrive:lead:{LEAD_UUID}", crms) == ("pipedrive", LEAD_UUID)
    for external_id in (
        None,
        "",
        "hubspot:51",
        "hubspot:contact:",
        "hubspot:deal:51",
        "pipedrive:deal:4711",
        "salesforce:00Q5g00000AbCdEEAZ",
        "generic:contact:51",
    ):
        assert lead_record(external_id, crms) is None, external_id
    assert lead_record("hubspot:contact:51", {"pipedrive"}) is None


def test_what_is_written_for_each_rating(fake_hubspot, fake_pipedrive):
    settings = settings_for(
        hubspot=fake_hubspot,
        pipedrive=fake_pipedrive,
        HUBSPOT_WRITEBACK_LEAD_STATUSES="accepted=OPEN_DEAL",
    )
    hs = [writeback.lead_fields_for(settings, "hubspot", r, BAD_DATA) for r in LEAD_RATINGS]
    assert hs == [
        {STATUS: "OPEN_DEAL", HS_REASON: ""},
        {STATUS: "BAD_TIMING", HS_REASON: ""},
        {STATUS: "UNQUALIFIED", HS_REASON: BAD_DATA},
    ]
    pd = writeback.lead_fields_for(settings, "pipedrive", "accepted", None)
    assert pd == {PD_RATING: "Accepted", PD_REASON: None}
    only_status = settings_for(hubspot=fake_hubspot, HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY=None)
    assert writeback.lead_fields_for(only_status, "hubspot", "rejected", BAD_DATA) == {
        STATUS: "UNQUALIFIED"
    }


# --- the fakes refuse what the CRMs refuse -----------------------------------------------------


def test_fake_hubspot_refuses_contact_writes_hubspot_refuses(fake_hubspot):
    api = HubSpotApi(api_url=fake_hubspot.url, token=HS_TOKEN)
    api.update_contact("51", {STATUS: "BAD_TIMING", HS_REASON: ""})
    for contact, props, status, text in (
        ("51", {"closeloop_missing": "x"}, 400, "PROPERTY_DOESNT_EXIST"),
        ("51", {STATUS: "QUALIFIED"}, 400, "INVALID_OPTION"),
        ("52", {STATUS: "NEW"}, 404, ""),
    ):
        with pytest.raises(HubSpotError) as err:
            api.update_contact(contact, props)
        assert err.value.status == status and text in str(err.value)
    with pytest.raises(HubSpotError) as token:
        HubSpotApi(api_url=fake_hubspot.url, token="wrong").update_contact("51", {STATUS: "NEW"})
    assert token.value.status == 401
    fake_hubspot.scopes.discard("crm.objects.contacts.write")
    with pytest.raises(HubSpotError) as scope:
        api.update_contact("51", {STATUS: "NEW"})
    assert scope.value.status == 403
    assert api.contact_property(STATUS)["options"][0]["value"] == "NEW"
    with pytest.raises(HubSpotError) as unknown:
        api.contact_property("closeloop_missing")
    assert unknown.value.status == 404
    assert bodies(fake_hubspot.contact_writes()) == [
        {"properties": {STATUS: "BAD_TIMING", HS_REASON: ""}}
    ]


def test_fake_pipedrive_refuses_lead_writes_pipedrive_refuses(fake_pipedrive):
    api = PipedriveApi(api_url=fake_pipedrive.url + "/api/v1", token=PD_TOKEN)
    api.update_lead(LEAD_UUID, {PD_RATING: "Accepted"})
    for lead_id, fields, status in (
        (LEAD_UUID, {"f" * 40: "x"}, 400),  # no such custom field
        (LEAD_UUID, {"lost_reason": "x"}, 400),  # a deal's standard field, not a lead's
        ("00000000-0000-0000-0000-000000000000", {PD_RATING: "x"}, 404),
    ):
        with pytest.raises(PipedriveError) as err:
            api.update_lead(lead_id, fields)
        assert err.value.status == status
    with pytest.raises(PipedriveError) as token:
        PipedriveApi(api_url=fake_pipedrive.url + "/api/v1", token="x").update_lead(
            LEAD_UUID, {PD_RATING: "x"}
        )
    assert token.value.status == 401
    assert bodies(fake_pipedrive.lead_writes()) == [{PD_RATING: "Accepted"}]


# --- the settings ------------------------------------------------------------------------------


def test_lead_writeback_settings_are_optional_and_checked(fake_hubspot, fake_pipedrive):
    assert settings_for().lead_writeback_crms == frozenset()
    both = settings_for(hubspot=fake_hubspot, pipedrive=fake_pipedrive)
    assert both.lead_writeback_crms == {"hubspot", "pipedrive"}
    assert both.writeback_crms == frozenset()  # the entries' write-back is its own
    assert dict(both.hubspot_writeback_lead_statuses) == {
        "accepted": "IN_PROGRESS",
        "not_ready": "BAD_TIMING",
        "rejected": "UNQUALIFIED",
    }
    mapped = settings_for(
        hubspot=fake_hubspot, HUBSPOT_WRITEBACK_LEAD_STATUSES=" accepted = OPEN_DEAL , "
    )
    assert dict(mapped.hubspot_writeback_lead_statuses)["accepted"] == "OPEN_DEAL"
    assert dict(mapped.hubspot_writeback_lead_statuses)["rejected"] == "UNQUALIFIED"

    with pytest.raises(ConfigError) as bad:
        Settings.from_env(
            {
                "DATABASE_URL": "sqlite://",
                "HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY": "Reject Reason",
                "HUBSPOT_WRITEBACK_LEAD_STATUSES": "qualified=OPEN_DEAL,rejected",
                "PIPEDRIVE_WRITEBACK_LEAD_RATING_FIELD": "lost_reason",
            },
            slack=False,
        )
    text = str(bad.value)
    assert (
        "HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY='Reject Reason' is not a contact property" in text
    )
    assert "HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY need HUBSPOT_ACCESS_TOKEN" in text
    assert "HUBSPOT_WRITEBACK_LEAD_STATUSES has 'qualified=OPEN_DEAL'" in text
    assert "HUBSPOT_WRITEBACK_LEAD_STATUSES has 'rejected'" in text
    assert "HUBSPOT_WRITEBACK_LEAD_STATUSES needs HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY" in text
    assert "PIPEDRIVE_WRITEBACK_LEAD_RATING_FIELD='lost_reason' is not a custom deal field" in text
    assert "PIPEDRIVE_WRITEBACK_LEAD_RATING_FIELD need PIPEDRIVE_API_TOKEN" in text
    assert len(bad.value.lines) == 7


# --- from Slack --------------------------------------------------------------------------------


@pytest.fixture
def settings_overrides(fake_hubspot, fake_pipedrive):
    return {**hubspot_env(fake_hubspot), **pipedrive_env(fake_pipedrive), "SALES_MANAGERS": "UMGR"}


def test_ratings_clicked_in_slack_are_written_back(harness, fake_hubspot, fake_pipedrive):
    h, slack = harness, harness.slack
    for external_id in ("hubspot:contact:51", f"pipedrive:lead:{LEAD_UUID}", "generic:L-1"):
        pk, created = receive_lead(
            h.rt,
            LeadIn(external_id=external_id, person="Jo Park", owner_email="ana@example.com"),
            origin="crm",
        )
        assert created
        nudge_new_lead(h.rt, pk)
    h.settle()
    hubspot_dm, pipedrive_dm, generic_dm = lead_dms(slack, "UANA")

    h.click_button("UANA", stored(slack, hubspot_dm), hubspot_dm.response["channel"], "lead_accept")
    h.click_button(
        "UANA", stored(slack, generic_dm), generic_dm.response["channel"], "lead_not_ready"
    )
    h.click_button(
        "UANA", stored(slack, pipedrive_dm), pipedrive_dm.response["channel"], "lead_reject"
    )
    reject = slack.calls_to("views.open")[-1].params["view"]
    submit_view(h, "UANA", reject, {"reason": BAD_DATA, "note": "Bounced"})
    h.settle()

    assert bodies(fake_hubspot.contact_writes("51")) == [
        {"properties": {STATUS: "IN_PROGRESS", HS_REASON: ""}}
    ]
    assert bodies(fake_pipedrive.lead_writes(LEAD_UUID)) == [
        {PD_RATING: "Rejected", PD_REASON: BAD_DATA}
    ]
    with session_scope(h.rt.session_factory) as s:
        calls = s.scalars(select(OutboxMessage).where(OutboxMessage.op == Op.CALL)).all()
        assert sorted((m.channel, m.state) for m in calls) == [
            ("hubspot", OutboxState.SENT),
            ("pipedrive", OutboxState.SENT),
        ]
