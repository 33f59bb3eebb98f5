"""POST /hooks/lead end to end: a signed lead -> the real WSGI server -> the lead stored once
before the answer -> the owner found in the fake Slack and their DM queued in the outbox.

The DM's rendering is another part's (its outbox kind): these tests assert on the stored
lead and the outbox row, which is what exactly-once is about."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.models import Lead, OutboxKind, OutboxMessage, OutboxState
from tests.harness import sign, tick
from tests.test_bad_input import _post_chunked, _send_huge

SECRET = "lead-hook-secret"
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a Tuesday


@pytest.fixture
def settings_overrides(request):
    """The hook on; a test's indirect parameter changes them (None: unset)."""
    settings = {
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "SALES_MANAGERS": "UMGR",
        "DEALS_WEBHOOK_SECRET": SECRET,
    }
    settings.update(getattr(request, "param", {}))
    return settings


def lead_body(**changes) -> dict:
    body = {
        "lead_id": "MKTO-1001",
        "name": "Dana Whitfield",
        "owner_email": "ana@example.com",
        "email": "dana@northwind.example",
        "company": "Northwind Traders",
        "title": "VP Operations",
        "source": "Webinar",
        "campaign": "Q4 ops webinar",
        "context": "Asked about SSO twice; 400 seats.",
        "handed_at": "2026-11-24T09:55:00Z",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def signed_headers(body: bytes, ts: int, secret: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Closeloop-Request-Timestamp": str(ts),
        "X-Closeloop-Signature": sign(body, ts, secret),
    }


def post_lead(h, payload, *, secret: str = SECRET, timestamp: int | None = None, **kw):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    ts = int(h.clock().timestamp()) if timestamp is None else timestamp
    return h.request("/hooks/lead", body, headers=signed_headers(body, ts, secret), signed=False)


def leads(h) -> list[Lead]:
    with session_scope(h.rt.session_factory) as s:
        rows = list(s.scalars(select(Lead).order_by(Lead.id)))
        s.expunge_all()
        return rows


def lead_dms(h) -> list[OutboxMessage]:
    """The owners' DMs queued; and, checked here, what Slack received: each queued DM that
    was sent reached Slack once, and none reached it without one."""
    with session_scope(h.rt.session_factory) as s:
        rows = list(
            s.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.kind == OutboxKind.LEAD_NUDGE)
                .order_by(OutboxMessage.id)
            )
        )
        s.expunge_all()
    in_slack = [
        c
        for c in h.slack.calls_to("chat.postMessage")
        if "lead_accept" in json.dumps(c.params.get("blocks"))
    ]
    sent = [r for r in rows if r.state == OutboxState.SENT]
    assert len(in_slack) == len(sent), (len(in_slack), [r.state for r in rows])
    return rows


def test_a_signed_lead_is_stored_and_its_owners_dm_queued(harness):
    h = harness
    h.clock.set(NOW)
    reply = post_lead(h, lead_body())
    assert reply.status == 201, reply.body
    assert reply.json() == {"ok": True, "lead_id": "generic:MKTO-1001", "duplicate": False}
    (lead,) = leads(h)
    assert lead.external_id == "generic:MKTO-1001" and lead.origin == "hook"
    assert (lead.person, lead.email, lead.company, lead.title) == (
        "Dana Whitfield",
        "dana@northwind.example",
        "Northwind Traders",
        "VP Operations",
    )
    assert (lead.source, lead.campaign) == ("Webinar", "Q4 ops webinar")
    assert lead.context == "Asked about SSO twice; 400 seats."
    assert lead.handed_at.replace(tzinfo=UTC) == NOW - timedelta(minutes=5)
    # After the answer the owner was found by email and their DM queued, once.
    assert lead.owner_user_id == "UANA"
    (dm,) = lead_dms(h)
    assert (dm.key, dm.channel, dm.subject_id) == (f"lead-nudge:{lead.id}", "UANA", lead.id)


def test_the_same_lead_twice_is_one_lead_and_one_dm(harness):
    h = harness
    h.clock.set(NOW)
    assert post_lead(h, lead_body()).status == 201
    again = post_lead(h, lead_body(name="Dana W."))  # a retry, or the sender re-sending
    assert again.status == 200 and again.json()["duplicate"] is True
    tick(h.rt)
    assert len(leads(h)) == 1 and leads(h)[0].person == "Dana Whitfield"
    assert len(lead_dms(h)) == 1


def test_two_deliveries_of_one_lead_at_once_are_one_lead(harness):
    """The sender retries before the first answer came: both race to store it."""
    from concurrent.futures import ThreadPoolExecutor

    h = harness
    h.clock.set(NOW)
    body = json.dumps(lead_body()).encode()
    ts = int(h.clock().timestamp())
    with ThreadPoolExecutor(4) as pool:
        replies = list(
            pool.map(
                lambda _: h.request(
                    "/hooks/lead", body, headers=signed_headers(body, ts), signed=False
                ),
                range(4),
            )
        )
    h.settle()
    assert sorted(r.status for r in replies) == [200, 200, 200, 201]
    assert len(leads(h)) == 1 and len(lead_dms(h)) == 1


def test_bad_signature_is_401_and_nothing_is_stored(harness):
    h = harness
    h.clock.set(NOW)
    body = json.dumps(lead_body()).encode()
    ts = int(h.clock().timestamp())
    refused = [
        post_lead(h, lead_body(), secret="not-the-secret"),
        post_lead(h, lead_body(), timestamp=ts - 10 * 60),  # stale
        h.request("/hooks/lead", body, headers={"Content-Type": "application/json"}, signed=False),
        h.request(
            "/hooks/lead",
            body.replace(b"Dana", b"Evil"),
            headers=signed_headers(body, ts),
            signed=False,
        ),
    ]
    for reply in refused:
        assert reply.status == 401, reply.body
    assert leads(h) == [] and lead_dms(h) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"lead_id": None}, "lead_id"),
        ({"name": " "}, "name"),
        ({"owner_email": None}, "owner_email"),
        ({"owner_email": "ana at example"}, "owner_email"),
        ({"owner_slack_id": "ana"}, "owner_slack_id"),
        ({"handed_at": "2026-12-24T09:00:00Z"}, "handed_at"),
        ({"company": {"name": "x"}}, "company"),
        ({"context": "x" * 3001}, "context"),
        ({"title": "VP\u0000"}, "title"),
    ],
)
def test_a_bad_field_is_400_naming_it(harness, changes, field):
    h = harness
    h.clock.set(NOW)
    reply = post_lead(h, lead_body(**changes))
    assert reply.status == 400, reply.body
    assert reply.json()["field"] == field and field in reply.json()["error"]
    assert leads(h) == []


def test_a_body_that_is_not_a_json_object_is_400(harness):
    h = harness
    h.clock.set(NOW)
    for body in (b"{nope", b"[1, 2]", b'"lead"', b"[" * 100 + b"]" * 100):
        reply = post_lead(h, body)
        assert reply.status == 400 and reply.json()["field"] == "body", (body, reply.body)
    assert leads(h) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_lead_is_413_before_it_is_read(harness, chunked):
    status, sent = _send_huge(harness.url, "/hooks/lead", chunked=chunked, total=8 * 1024 * 1024)
    assert status == 413
    assert sent < 8 * 1024 * 1024
    assert leads(harness) == []


def test_a_signed_chunked_lead_is_read_and_stored(harness):
    h = harness
    h.clock.set(NOW)
    body = json.dumps(lead_body()).encode()
    status, answer = _post_chunked(
        h.url, "/hooks/lead", body, signed_headers(body, int(h.clock().timestamp()))
    )
    h.settle()
    assert (status, answer["lead_id"]) == (201, "generic:MKTO-1001")
    assert len(leads(h)) == 1 and len(lead_dms(h)) == 1


def test_get_is_405(harness):
    assert harness.request("/hooks/lead", method="GET", signed=False).status == 405


@pytest.mark.parametrize("settings_overrides", [{"DEALS_WEBHOOK_SECRET": None}], indirect=True)
def test_without_the_secret_the_hook_answers_503(harness):
    h = harness
    h.clock.set(NOW)
    reply = post_lead(h, lead_body(), secret="anything")
    assert reply.status == 503 and "DEALS_WEBHOOK_SECRET" in reply.json()["error"]
    assert leads(h) == []


def test_a_crash_after_storing_loses_no_dm(harness, monkeypatch):
    """The process dies between its answer and the owner's lookup: the tick does it."""
    import bot.listeners.lead_webhook as hook

    h = harness
    h.clock.set(NOW)
    monkeypatch.setattr(hook, "nudge_new_lead", lambda rt, pk: None)
    assert post_lead(h, lead_body()).status == 201
    assert lead_dms(h) == []
    tick(h.another_process())
    tick(h.rt)
    assert len(lead_dms(h)) == 1


def test_a_database_that_cannot_store_the_lead_is_503_so_the_sender_retries(harness, monkeypatch):
    from sqlalchemy.exc import OperationalError

    import bot.listeners.lead_webhook as hook

    h = harness
    h.clock.set(NOW)
    real = hook.receive_lead

    def down(*args, **kwargs):
        raise OperationalError("INSERT INTO leads", {}, Exception("database is locked"))

    monkeypatch.setattr(hook, "receive_lead", down)
    reply = post_lead(h, lead_body())
    assert reply.status == 503 and "try again" in reply.json()["error"]
    monkeypatch.setattr(hook, "receive_lead", real)
    assert post_lead(h, lead_body()).status == 201  # the sender's retry
    assert len(leads(h)) == 1 and len(lead_dms(h)) == 1


def test_slack_failing_the_owners_lookup_still_gives_one_dm(harness):
    """Slack errors on the lookup after the answer: the lead waits, stored; ticks in three
    processes at once look again and queue the DM once."""
    h = harness
    h.clock.set(NOW)
    h.slack.fail_next("users.lookupByEmail", status=500, times=5)
    assert post_lead(h, lead_body()).status == 201
    assert len(leads(h)) == 1 and lead_dms(h) == []
    h.clock.advance(minutes=3)  # the first lookup's claim has run out
    h.tick_together(3)
    h.clock.advance(minutes=3)
    h.tick_together(3)
    (dm,) = lead_dms(h)
    assert dm.channel == "UANA" and leads(h)[0].owner_user_id == "UANA"
