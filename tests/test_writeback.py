"""Write-back to the CRMs through the outbox: the Sender's CALL messages (sent by their kind's
own hook, retried, given up, fenced), the fakes' refusals, an edit written once more, and
the settings. End to end (a CRM's deal logged from Slack): tests/test_crm_end_to_end.py."""

from __future__ import annotations

import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from slack_sdk import WebClient
from sqlalchemy import select

from bot.config import ConfigError, Settings
from bot.db import session_scope
from bot.delivery import writeback
from bot.delivery.kinds import register_all
from bot.delivery.outbox import CallFailed, Delivered, Kind, Kinds, Sender, rendered
from bot.intake.hubspot_api import HubSpotApi, HubSpotError
from bot.intake.pipedrive_api import PipedriveApi, PipedriveError
from bot.models import Deal, Op, OutboxMessage, OutboxState, WinLossEntry
from bot.services import outbox as outbox_svc
from bot.services import winloss as wl
from tests.fakehubspot import FakeHubSpot
from tests.fakepipedrive import FakePipedrive

HS_TOKEN = "pat-na1-writeback"
PD_TOKEN = "0123456789abcdef0123456789abcdef01234567"
WORDS = "closeloop_customer_words"
CATEGORY = "closeloop_category"
PD_WORDS = "dcf558aac1ae4e8c4f849ba5e668430d8df9be12"  # in crm_samples/pipedrive/deal_fields
PD_CATEGORY = "5ea8bbb8d4a2a4a0d0e8c1f0b6a7e2f3c4d5e6f7"
QUOTE = "Your onboarding took six weeks & the <other vendor> did it in one, their COO said"


# --- the Sender with a CALL kind -------------------------------------------------------------


class Script:
    """A CALL kind whose send hook answers from a list (a CallFailed is raised)."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.sent: list[int] = []  # message ids given to send
        self.recorded: list[int] = []  # the kind's sent hook
        self.refused: list[str] = []
        self.during = None  # called inside send (a claim lost meanwhile)

    def kinds(self) -> Kinds:
        def render(session, m, now):
            return rendered(m, payload={"deal_id": "9001", "fields": {"x": "y"}})

        def send(m):
            assert m.payload == {"deal_id": "9001", "fields": {"x": "y"}}
            self.sent.append(m.id)
            if self.during is not None:
                self.during()
            answer = self.answers.pop(0) if self.answers else None
            if isinstance(answer, CallFailed):
                raise answer
            return Delivered(m.channel, "9001")

        def sent(session, m, d, now):
            self.recorded.append(m.id)

        def refused(session, m, error, now):
            self.refused.append(error)

        kinds = Kinds()
        kinds.add("test_call", Kind(render=render, send=send, sent=sent, refused=refused))
        return kinds


def make_sender(session_factory, clock, kinds: Kinds) -> Sender:
    return Sender(
        session_factory=session_factory,
        # never called: a CALL does not go to Slack (the port is closed)
        client=WebClient(token="xoxb-unused", base_url="http://127.0.0.1:9/"),
        kinds=kinds,
        owner="test",
        clock=clock,
        pacer=None,
        workers=2,
    )


def enqueue_call(session_factory, clock, key: str = "call:1") -> None:
    with session_scope(session_factory) as s:
        outbox_svc.enqueue(
            s, key=key, kind="test_call", op=Op.CALL, channel="crm", subject_id=1, now=clock()
        )


def row(session_factory, key: str = "call:1") -> OutboxMessage:
    with session_scope(session_factory) as s:
        message = s.scalars(select(OutboxMessage).where(OutboxMessage.key == key)).one()
        s.expunge(message)
        return message


def test_a_call_is_sent_by_its_kind_and_recorded(session_factory, clock):
    script = Script()
    sender = make_sender(session_factory, clock, script.kinds())
    enqueue_call(session_factory, clock)
    drained = sender.drain()
    assert len(drained.sent) == 1 and len(script.sent) == 1 == len(script.recorded)
    m = row(session_factory)
    assert (m.state, m.attempts, m.sent_channel, m.sent_ts) == (OutboxState.SENT, 1, "crm", "9001")
    assert sender.drain().sent == [] and len(script.sent) == 1  # once


def test_a_request_sends_its_own_call_right_away(session_factory, clock):
    script = Script()
    sender = make_sender(session_factory, clock, script.kinds())
    outbox_svc.track_commits(session_factory)
    outbox_svc.committed_keys()
    enqueue_call(session_factory, clock)
    keys = outbox_svc.committed_keys()
    assert keys == ["call:1"]
    assert len(sender.send_now(keys).sent) == 1 and row(session_factory).state == OutboxState.SENT


def test_a_429_waits_its_retry_after_in_the_outbox_not_in_a_sleep(session_factory, clock):
    script = Script(CallFailed("HTTP 429 RATE_LIMIT", status=429, retry_after=30))
    sender = make_sender(session_factory, clock, script.kinds())
    enqueue_call(session_factory, clock)
    started = time.monotonic()
    drained = sender.drain()
    assert time.monotonic() - started < 2  # nobody slept 30 seconds
    assert len(drained.retrying) == 1 and script.refused == [] and script.recorded == []
    m = row(session_factory)
    assert m.state == OutboxState.PENDING and m.not_before == clock() + timedelta(seconds=30)
    assert "429" in (m.last_error or "")
    clock.advance(seconds=29)
    assert sender.drain().sent == [] and len(script.sent) == 1  # not due yet
    clock.advance(seconds=2)
    assert len(sender.drain().sent) == 1 and len(script.sent) == 2
    assert row(session_factory).state == OutboxState.SENT


@pytest.mark.parametrize("status", [503, None])
def test_a_5xx_or_no_answer_is_retried(session_factory, clock, status):
    script = Script(CallFailed("down", status=status))
    sender = make_sender(session_factory, clock, script.kinds())
    enqueue_call(session_factory, clock)
    assert len(sender.drain().retrying) == 1
    m = row(session_factory)
    assert m.state == OutboxState.PENDING and m.not_before > clock()
    assert script.refused == []
    clock.advance(minutes=1)
    assert len(sender.drain().sent) == 1 and len(script.sent) == 2


def test_a_permanent_refusal_is_failed_once_and_told_to_the_kind(session_factory, clock):
    script = Script(CallFailed("HTTP 400 PROPERTY_DOESNT_EXIST", status=400, permanent=True))
    sender = make_sender(session_factory, clock, script.kinds())
    enqueue_call(session_factory, clock)
    drained = sender.drain()
    assert len(drained.failed) == 1 and script.refused == ["HTTP 400 PROPERTY_DOESNT_EXIST"]
    m = row(session_factory)
    assert m.state == OutboxState.FAILED and m.last_error == "HTTP 400 PROPERTY_DOESNT_EXIST"
    clock.advance(hours=1)
    sender.drain()
    assert len(script.sent) == 1  # not tried again


def test_a_sender_that_lost_its_claim_records_nothing(session_factory, clock):
    script = Script()
    sender = make_sender(session_factory, clock, script.kinds())
    enqueue_call(session_factory, clock)
    taken = []

    def lapse():  # the call outlived the claim's lease: another process took the message
        with session_scope(session_factory) as s:
            later = clock() + outbox_svc.LEASE + timedelta(seconds=1)
            taken.extend(outbox_svc.claim(s, owner="other", now=later, limit=5))

    script.during = lapse
    drained = sender.drain()
    assert len(taken) == 1 and drained.sent == [] and script.recorded == []
    m = row(session_factory)
    assert m.state == OutboxState.SENDING and m.claimed_by == taken[0].token


# --- the write-back kind, against the fakes --------------------------------------------------


@pytest.fixture
def fake_hubspot():
    fake = FakeHubSpot(token=HS_TOKEN)
    fake.start()
    fake.add_property(WORDS)
    fake.add_property(CATEGORY, field_type="text")
    fake.set_deal("9001")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_pipedrive():
    fake = FakePipedrive(token=PD_TOKEN)
    fake.start()
    fake.set_deal("4711", status="lost")
    try:
        yield fake
    finally:
        fake.stop()


def settings_for(hubspot=None, pipedrive=None, **more) -> Settings:
    env = {"DATABASE_URL": "sqlite://"}
    if hubspot is not None:
        env.update(
            HUBSPOT_CLIENT_SECRET="hs-secret",
            HUBSPOT_ACCESS_TOKEN=HS_TOKEN,
            HUBSPOT_API_URL=hubspot.url,
            HUBSPOT_WRITEBACK_REASON_PROPERTY=WORDS,
            HUBSPOT_WRITEBACK_CATEGORY_PROPERTY=CATEGORY,
        )
    if pipedrive is not None:
        env.update(
            PIPEDRIVE_WEBHOOK_USER="closeloop",
            PIPEDRIVE_WEBHOOK_PASSWORD="pw",
            PIPEDRIVE_API_TOKEN=PD_TOKEN,
            PIPEDRIVE_API_URL=pipedrive.url + "/api/v1",
            PIPEDRIVE_WRITEBACK_REASON_FIELD=PD_WORDS,
            PIPEDRIVE_WRITEBACK_CATEGORY_FIELD=PD_CATEGORY,
        )
    env.update(more)
    return Settings.from_env({k: v for k, v in env.items() if v is not None}, slack=False)


def log(session, settings, *, external_id, reason=QUOTE, category="Product", now, user="UANA"):
    deal = session.scalars(select(Deal).where(Deal.external_id == external_id)).one_or_none()
    if deal is None:
        deal = Deal(
            external_id=external_id,
            name="Acme renewal",
            outcome="lost",
            closed_at=now - timedelta(hours=1),
            owner_user_id="UANA",
            origin="crm",
            received_at=now,
            deadline_at=now + timedelta(hours=23),
        )
        session.add(deal)
        session.flush()
    entry, _, _ = wl.log_entry(
        session,
        entry_in=wl.EntryIn(
            deal_name="Acme renewal",
            outcome="lost",
            reason=reason,
            reason_category=category,
            competitor=None,
            insight="Lead with the one-week onboarding",
            closed_on=now.date(),
            deal_pk=deal.id,
        ),
        user_id=user,
        managers=(),
        categories=("Price", "Product", "Timing"),
        deadline_hours=24,
        tz=ZoneInfo("UTC"),
        channel="CWINLOSS",
        now=now,
        writeback=settings.writeback_crms,
    )
    return entry


class WritebackSender:
    """The outbox's Sender with every kind registered, sending only the write-backs (the
    Slack messages logging queues have no Slack to go to here)."""

    def __init__(self, session_factory, clock, settings) -> None:
        self.session_factory = session_factory
        self.sender = make_sender(session_factory, clock, register_all(Kinds(), settings))

    def drain(self):
        with session_scope(self.session_factory) as s:
            keys = list(s.scalars(select(OutboxMessage.key).where(OutboxMessage.op == Op.CALL)))
        return self.sender.send_now(keys)


def writeback_sender(session_factory, clock, settings) -> WritebackSender:
    return WritebackSender(session_factory, clock, settings)


def test_a_logged_entry_is_written_to_the_hubspot_deal(session_factory, clock, fake_hubspot):
    settings = settings_for(hubspot=fake_hubspot)
    with session_scope(session_factory) as s:
        log(s, settings, external_id="hubspot:9001", now=clock())
    writeback_sender(session_factory, clock, settings).drain()
    (write,) = fake_hubspot.writes("9001")
    assert write.method == "PATCH" and write.authorization == f"Bearer {HS_TOKEN}"
    # the words as stored: no Slack escaping in the CRM's field
    assert write.body == {"properties": {WORDS: QUOTE, CATEGORY: "Product"}}
    assert fake_hubspot.deals["9001"]["properties"][WORDS] == QUOTE


def test_an_edit_writes_the_latest_words_once_more(session_factory, clock, fake_hubspot):
    settings = settings_for(hubspot=fake_hubspot)
    sender = writeback_sender(session_factory, clock, settings)
    with session_scope(session_factory) as s:
        log(s, settings, external_id="hubspot:9001", now=clock())
    sender.drain()
    clock.advance(minutes=5)
    second = "They chose the other vendor because its onboarding took a single week"
    with session_scope(session_factory) as s:
        log(s, settings, external_id="hubspot:9001", reason=second, category="Timing", now=clock())
    sender.drain()
    sender.drain()
    writes = fake_hubspot.writes("9001")
    assert [w.body for w in writes] == [
        {"properties": {WORDS: QUOTE, CATEGORY: "Product"}},
        {"properties": {WORDS: second, CATEGORY: "Timing"}},
    ]

    # Edited again while a write is under way with the words it rendered: once that claim
    # records its write, the message is pending again, and the latest words go out, once.
    third = "In the end their CFO said the price of the second licence decided it"
    fourth = "In the end their CFO said the second licence's price decided it, not onboarding"
    clock.advance(minutes=1)
    with session_scope(session_factory) as s:
        log(s, settings, external_id="hubspot:9001", reason=third, now=clock())
    key = f"crm-writeback:{_entry_id(session_factory)}"
    with session_scope(session_factory) as s:  # a slow sender takes it (rendering `third`)
        (claimed,) = outbox_svc.claim(s, owner="slow", now=clock(), limit=5, keys=[key])
    clock.advance(minutes=1)
    with session_scope(session_factory) as s:
        log(s, settings, external_id="hubspot:9001", reason=fourth, now=clock())
    assert row(session_factory, key).rearm
    with session_scope(session_factory) as s:  # the slow write ends: recorded, re-armed
        assert outbox_svc.mark_sent(s, claimed, channel="hubspot", ts="9001", now=clock())
    assert row(session_factory, key).state == OutboxState.PENDING
    sender.drain()
    sender.drain()
    writes = fake_hubspot.writes("9001")
    assert len(writes) == 3 and writes[-1].body == {
        "properties": {WORDS: fourth, CATEGORY: "Product"}
    }
    with session_scope(session_factory) as s:
        calls = select(OutboxMessage.state).where(OutboxMessage.op == Op.CALL)
        assert s.scalars(calls).all() == [OutboxState.SENT]


def test_a_refused_property_is_given_up_and_a_429_retried(session_factory, clock, fake_hubspot):
    settings = settings_for(hubspot=fake_hubspot, HUBSPOT_WRITEBACK_CATEGORY_PROPERTY="nope")
    sender = writeback_sender(session_factory, clock, settings)
    fake_hubspot.fail_writes(429, retry_after="7")
    with session_scope(session_factory) as s:
        log(s, settings, external_id="hubspot:9001", now=clock())
    sender.drain()
    m = row(session_factory, key=f"crm-writeback:{_entry_id(session_factory)}")
    assert m.state == OutboxState.PENDING and m.not_before == clock() + timedelta(seconds=7)
    clock.advance(seconds=8)
    sender.drain()
    m = row(session_factory, key=m.key)
    assert m.state == OutboxState.FAILED and "PROPERTY_DOESNT_EXIST" in (m.last_error or "")
    assert fake_hubspot.writes() == []
    assert [c.status for c in fake_hubspot.calls if c.method == "PATCH"] == [429, 400]


def test_pipedrive_gets_the_words_and_category_by_field_key(session_factory, clock, fake_pipedrive):
    settings = settings_for(pipedrive=fake_pipedrive)
    sender = writeback_sender(session_factory, clock, settings)
    fake_pipedrive.fail_writes(503, times=2)
    with session_scope(session_factory) as s:
        log(s, settings, external_id="pipedrive:4711", now=clock())
    for _ in range(3):
        sender.drain()
        clock.advance(minutes=1)
    (write,) = fake_pipedrive.writes("4711")
    assert write.body == {PD_WORDS: QUOTE, PD_CATEGORY: "Product"}
    assert write.token_header == PD_TOKEN and write.query == {}
    assert fake_pipedrive.deals["4711"][PD_WORDS] == QUOTE


def test_no_writeback_for_other_crms_or_when_it_is_off(
    session_factory, clock, fake_hubspot, fake_pipedrive
):
    on = settings_for(hubspot=fake_hubspot)  # HubSpot's on; Pipedrive's not
    with session_scope(session_factory) as s:
        for external_id in ("salesforce:0065g00000AbCdEAAV", "CRM-1", "pipedrive:4711"):
            log(s, on, external_id=external_id, now=clock())
        log(s, settings_for(), external_id="hubspot:9001", now=clock())  # write-back off
    writeback_sender(session_factory, clock, on).drain()
    with session_scope(session_factory) as s:
        assert s.scalars(select(OutboxMessage.kind).where(OutboxMessage.op == Op.CALL)).all() == []
    assert fake_hubspot.writes() == [] and fake_pipedrive.writes() == []


def _entry_id(session_factory) -> int:
    with session_scope(session_factory) as s:
        return s.scalars(select(WinLossEntry.id)).one()


# --- the fakes refuse what the CRMs refuse -----------------------------------------------------


def test_fake_hubspot_refuses_what_hubspot_refuses(fake_hubspot):
    api = HubSpotApi(api_url=fake_hubspot.url, token=HS_TOKEN)
    api.update_deal("9001", {WORDS: "fine"})
    with pytest.raises(HubSpotError) as missing:
        api.update_deal("9001", {"closeloop_missing": "x"})
    assert missing.value.status == 400 and "does not exist" in str(missing.value)
    assert writeback.failed(400, "x", None).permanent
    with pytest.raises(HubSpotError) as gone:
        api.update_deal("1", {WORDS: "x"})
    assert gone.value.status == 404
    with pytest.raises(HubSpotError) as token:
        HubSpotApi(api_url=fake_hubspot.url, token="wrong").update_deal("9001", {WORDS: "x"})
    assert token.value.status == 401
    fake_hubspot.fail_writes(429, retry_after="3")
    with pytest.raises(HubSpotError) as limited:
        api.update_deal("9001", {WORDS: "x"})
    assert (limited.value.status, limited.value.retry_after) == (429, 3.0)
    with pytest.raises(HubSpotError) as long:
        api.update_deal("9001", {WORDS: "x" * 65_537})
    assert long.value.status == 400
    assert api.deal_property(WORDS)["name"] == WORDS
    with pytest.raises(HubSpotError) as unknown:
        api.deal_property("closeloop_missing")
    assert unknown.value.status == 404
    assert [w.body for w in fake_hubspot.writes()] == [{"properties": {WORDS: "fine"}}]


def test_fake_pipedrive_refuses_what_pipedrive_refuses(fake_pipedrive):
    api = PipedriveApi(api_url=fake_pipedrive.url + "/api/v1", token=PD_TOKEN)
    api.update_deal("4711", {PD_WORDS: "fine"})
    for deal_id, fields, status in (
        ("4711", {"f" * 40: "x"}, 400),
        ("1", {PD_WORDS: "x"}, 404),
    ):
        with pytest.raises(PipedriveError) as err:
            api.update_deal(deal_id, fields)
        assert err.value.status == status
    with pytest.raises(PipedriveError) as token:
        PipedriveApi(api_url=fake_pipedrive.url + "/api/v1", token="x").update_deal("4711", {})
    assert token.value.status == 401
    fake_pipedrive.fail_writes(429, retry_after="2")
    with pytest.raises(PipedriveError) as limited:
        api.update_deal("4711", {PD_WORDS: "x"})
    assert (limited.value.status, limited.value.retry_after) == (429, 2.0)
    assert set(api.deal_fields()) >= {PD_WORDS, PD_CATEGORY, "title"}
    assert [w.body for w in fake_pipedrive.writes()] == [{PD_WORDS: "fine"}]


def test_failures_map_to_the_outbox(session_factory):
    assert writeback.failed(429, "slow down", None).retry_after == 1.0
    assert not writeback.failed(502, "bad gateway", None).permanent
    assert writeback.failed(0, "refused", None).status is None
    assert not writeback.failed(401, "token", None).permanent
    assert writeback.failed(404, "no deal", None).permanent


def test_an_entry_without_a_category_clears_the_crms(fake_hubspot, fake_pipedrive):
    settings = settings_for(hubspot=fake_hubspot, pipedrive=fake_pipedrive)
    entry = WinLossEntry(reason=QUOTE, reason_category=None)  # imported before categories
    assert writeback.fields_for(settings, "hubspot", entry) == {WORDS: QUOTE, CATEGORY: ""}
    assert writeback.fields_for(settings, "pipedrive", entry) == {
        PD_WORDS: QUOTE,
        PD_CATEGORY: None,
    }
    only_words = settings_for(hubspot=fake_hubspot, HUBSPOT_WRITEBACK_CATEGORY_PROPERTY=None)
    assert writeback.fields_for(only_words, "hubspot", entry) == {WORDS: QUOTE}


def test_long_words_are_cut_to_hubspots_limit():
    assert writeback.fit("x" * 70_000) == "x" * 65_535 + "…"
    assert len(writeback.fit("x" * 70_000)) == 65_536 and writeback.fit("short") == "short"


# --- the settings ------------------------------------------------------------------------------


def test_writeback_settings_are_optional_and_checked():
    assert settings_for().writeback_crms == frozenset()
    base = {
        "DATABASE_URL": "sqlite://",
        "HUBSPOT_CLIENT_SECRET": "s",
        "HUBSPOT_ACCESS_TOKEN": "t",
        "PIPEDRIVE_WEBHOOK_USER": "u",
        "PIPEDRIVE_WEBHOOK_PASSWORD": "p",
        "PIPEDRIVE_API_TOKEN": "t",
    }
    assert Settings.from_env(base, slack=False).writeback_crms == frozenset()
    on = Settings.from_env(
        {
            **base,
            "HUBSPOT_WRITEBACK_REASON_PROPERTY": WORDS,
            "PIPEDRIVE_WRITEBACK_CATEGORY_FIELD": PD_WORDS,
        },
        slack=False,
    )
    assert on.writeback_crms == {"hubspot", "pipedrive"}
    assert on.hubspot_writeback_category_property is None
    assert on.pipedrive_writeback_category_field == PD_WORDS

    with pytest.raises(ConfigError) as bad:
        Settings.from_env(
            {
                "DATABASE_URL": "sqlite://",
                "HUBSPOT_WRITEBACK_REASON_PROPERTY": "Customer Words",
                "PIPEDRIVE_WRITEBACK_REASON_FIELD": "not-a-key",
                "PIPEDRIVE_WRITEBACK_CATEGORY_FIELD": "not-a-key",
            },
            slack=False,
        )
    text = str(bad.value)
    assert "HUBSPOT_WRITEBACK_REASON_PROPERTY='Customer Words' is not" in text
    assert "HUBSPOT_WRITEBACK_REASON_PROPERTY need HUBSPOT_ACCESS_TOKEN" in text
    assert "PIPEDRIVE_WRITEBACK_REASON_FIELD='not-a-key' is not" in text
    assert "must name two different fields" in text
    assert len(bad.value.lines) == 6
