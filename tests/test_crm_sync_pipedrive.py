"""The daily reconciliation with Pipedrive (webhooks get dropped): the won and lost deals its
API lists as closed since a day are stored as deliveries once and processed as webhooks are,
by ``closeloop crm sync --since`` and by the tick once a day; nobody is asked twice."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.intake import deliveries as deliveries_mod
from bot.intake import pipedrive
from bot.intake.pipedrive_api import PipedriveApi, PipedriveError
from bot.models import CrmDelivery, Deal, InboxState
from tests.conftest import closeloop
from tests.fakepipedrive import FakePipedrive
from tests.harness import tick
from tests.test_pipedrive import (
    CLOSED,
    PASSWORD,
    PD_TOKEN,
    USER,
    event,
    post_pipedrive,
)
from tests.test_winloss_scenario import nudges_to

DEALS = "/api/v1/deals"
SYNC_KEY = "deal:4711:sync:4711:lost:2026-11-20T14:00:00Z"


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
        "PIPEDRIVE_API_URL": fake_pipedrive.url + "/api/v1",
    }
    settings.update(getattr(request, "param", {}))
    return settings


@pytest.fixture(autouse=True)
def pipedrive_deals(fake_pipedrive):
    """Deal 4711 lost 2026-11-20 14:00 (owner 42): its webhook never came; 4712 won long
    before; 4713 open, edited since."""
    fake_pipedrive.set_deal("4711")
    fake_pipedrive.set_deal(
        "4712",
        status="won",
        lost_time=None,
        lost_reason=None,
        won_time="2026-10-02 10:00:00",
        close_time="2026-10-02 10:00:00",
        update_time="2026-10-02 10:00:00",
    )
    fake_pipedrive.set_deal(
        "4713",
        status="open",
        lost_time=None,
        close_time=None,
        update_time="2026-11-21 09:00:00",
    )
    return fake_pipedrive


def pipedrive_env(cli_env, fake, **changes):
    env = {
        **cli_env,
        "PIPEDRIVE_WEBHOOK_USER": USER,
        "PIPEDRIVE_WEBHOOK_PASSWORD": PASSWORD,
        "PIPEDRIVE_API_TOKEN": PD_TOKEN,
        "PIPEDRIVE_API_URL": fake.url + "/api/v1",
    }
    env.update(changes)
    return {k: v for k, v in env.items() if v is not None}


def stored(session_factory) -> list[CrmDelivery]:
    with session_scope(session_factory) as s:
        rows = list(s.scalars(select(CrmDelivery).order_by(CrmDelivery.id)))
        s.expunge_all()
        return rows


def deals(session_factory) -> list[Deal]:
    with session_scope(session_factory) as s:
        rows = list(s.scalars(select(Deal).order_by(Deal.id)))
        s.expunge_all()
        return rows


def add_lost_deals(fake: FakePipedrive, n: int, *, start: int = 10_000, day: int = 10) -> None:
    for i in range(n):
        closed = (datetime(2026, 11, day, tzinfo=UTC) + timedelta(minutes=i)).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        fake.set_deal(str(start + i), lost_time=closed, close_time=closed, update_time=closed)


# --- closeloop crm sync -------------------------------------------------------------------


def test_crm_sync_takes_in_a_pipedrive_deal_whose_webhook_was_dropped_once(
    cli_env, fake_slack, fake_pipedrive, session_factory
):
    env = pipedrive_env(cli_env, fake_pipedrive)
    out = closeloop(env, "crm", "sync", "--since", "2026-11-01", "--source", "pipedrive")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["pipedrive: found 1 closed deals since 2026-11-01, 1 new"]
    (deal,) = deals(session_factory)
    assert deal.external_id == "pipedrive:4711" and deal.outcome == "lost"
    assert deal.crm_reason == "Price" and deal.owner_email == "ana@example.com"
    assert deal.name == "Acme renewal" and deal.closed_at.replace(tzinfo=UTC) == CLOSED
    assert len(nudges_to(fake_slack, "UANA")) == 1
    (delivery,) = stored(session_factory)
    assert delivery.source == "pipedrive" and delivery.state == InboxState.DONE
    assert delivery.delivery_id == SYNC_KEY
    body = json.loads(delivery.body)
    assert body["meta"]["action"] == "sync" and body["meta"]["timestamp"] == "2026-11-20T14:00:00Z"
    assert body["data"]["owner_id"] == 42 and body["data"]["status"] == "lost"
    # Pipedrive was asked as it documents: each closed status, newest update first, the token
    # in the x-api-token header (never the URL).
    listed = fake_pipedrive.calls_to(DEALS)
    assert [c.query["status"] for c in listed] == [["won"], ["lost"]]
    assert {c.query["sort"][0] for c in listed} == {"update_time DESC"}
    assert {c.token_header for c in listed} == {PD_TOKEN}
    assert all("api_token" not in c.query for c in fake_pipedrive.calls)

    again = closeloop(env, "crm", "sync", "--since", "2026-11-01", "--source", "pipedrive")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines() == ["pipedrive: found 1 closed deals since 2026-11-01, 0 new"]
    assert len(deals(session_factory)) == 1 and len(stored(session_factory)) == 1
    assert len(nudges_to(fake_slack, "UANA")) == 1

    # Further back, the October win too; every configured CRM without --source.
    older = closeloop(env, "crm", "sync", "--since", "2026-10-01")
    assert older.returncode == 0, older.stdout + older.stderr
    assert "pipedrive: found 2 closed deals since 2026-10-01, 1 new" in older.stdout.splitlines()
    assert [d.external_id for d in deals(session_factory)] == ["pipedrive:4711", "pipedrive:4712"]


def test_crm_sync_with_a_token_pipedrive_refuses_is_one_line_and_exit_1(
    cli_env, fake_slack, fake_pipedrive, session_factory
):
    env = pipedrive_env(cli_env, fake_pipedrive, PIPEDRIVE_API_TOKEN="wrong-token")
    out = closeloop(env, "crm", "sync", "--since", "2026-11-01", "--source", "pipedrive")
    assert out.returncode == 1
    assert out.stdout == ""
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("closeloop:")]  # (and the log)
    assert line.startswith(
        "closeloop: pipedrive: stopped after 0 closed deals (0 new): Pipedrive 401"
    )
    assert "wrong-token" not in out.stdout + out.stderr
    assert stored(session_factory) == [] and nudges_to(fake_slack, "UANA") == []


def test_crm_sync_without_pipedrive_configured_is_a_note_and_exit_0(cli_env, fake_slack):
    out = closeloop(cli_env, "crm", "sync", "--since", "2026-11-01", "--source", "pipedrive")
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    assert line.startswith("pipedrive: not configured, skipped (Pipedrive is off")


# --- the daily tick and the webhooks ------------------------------------------------------


def test_the_daily_tick_takes_in_a_dropped_pipedrive_deal_once(harness, fake_pipedrive):
    h = harness
    h.clock.set(CLOSED + timedelta(hours=2))
    tick(h.rt)
    h.settle()
    (deal,) = deals(h.session_factory)
    assert deal.external_id == "pipedrive:4711"
    assert len(nudges_to(h.slack, "UANA")) == 1
    assert len(fake_pipedrive.calls_to(DEALS)) == 2  # won, then lost
    # Not again today; the next day it finds the same deal and asks nobody twice.
    tick(h.rt)
    assert len(fake_pipedrive.calls_to(DEALS)) == 2
    h.clock.advance(days=1, minutes=1)
    tick(h.another_process())
    h.settle()
    assert len(fake_pipedrive.calls_to(DEALS)) == 4
    assert len(stored(h.session_factory)) == 1 and len(deals(h.session_factory)) == 1
    assert len(nudges_to(h.slack, "UANA")) == 1


def test_a_deal_that_came_by_webhook_and_is_found_by_the_sync_is_one_dm(harness, fake_pipedrive):
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    assert post_pipedrive(h, event()).json()["stored"] == 1
    assert len(nudges_to(h.slack, "UANA")) == 1
    tick(h.rt)  # the day's sync finds it: stored as its own delivery, taken in once
    h.settle()
    rows = stored(h.session_factory)
    assert [r.delivery_id for r in rows] == [
        "deal:4711:5d3c2b1a-9e8f-4a7b-8c6d-5e4f3a2b1c0d",
        SYNC_KEY,
    ]
    assert rows[1].state == InboxState.DONE and "unchanged" in rows[1].note
    assert len(deals(h.session_factory)) == 1
    assert len(nudges_to(h.slack, "UANA")) == 1


def test_a_webhook_retried_after_the_sync_took_the_deal_in_is_one_dm(harness, fake_pipedrive):
    h = harness
    h.clock.set(CLOSED + timedelta(hours=2))
    tick(h.rt)
    h.settle()
    assert len(nudges_to(h.slack, "UANA")) == 1
    assert post_pipedrive(h, event(attempt=4)).json()["stored"] == 1  # Pipedrive's last retry
    h.settle()
    assert len(deals(h.session_factory)) == 1
    assert len(nudges_to(h.slack, "UANA")) == 1


def test_a_deal_reopened_by_a_later_webhook_is_not_closed_again_by_an_older_sync(
    harness, fake_pipedrive
):
    """The sync's delivery is ordered with the webhooks' by its close time: a reopening
    received later (a newer meta.timestamp) wins over it."""
    h = harness
    h.clock.set(CLOSED + timedelta(hours=2))
    reopened = event(
        event_id="e-reopen",
        timestamp="2026-11-20T15:00:00Z",
        data={"status": "open", "lost_time": None, "lost_reason": None},
        previous={"status": "lost"},
    )
    assert post_pipedrive(h, reopened).json()["stored"] == 1
    h.settle()
    (found,) = deliveries_mod.sync(h.rt, since=CLOSED - timedelta(days=1), sources=["pipedrive"])
    assert (found.found, found.new) == (1, 1)
    h.settle()
    sync_row = next(r for r in stored(h.session_factory) if r.delivery_id == SYNC_KEY)
    assert "superseded" in sync_row.note
    assert deals(h.session_factory) == [] and nudges_to(h.slack, "UANA") == []


def test_the_webhook_endpoint_takes_no_delivery_of_the_syncs_own_action(harness, fake_pipedrive):
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    forged = event(action="sync", previous=None)
    reply = post_pipedrive(h, forged)
    assert reply.status == 200
    assert reply.json() == {"ok": True, "stored": 0, "duplicates": 0, "ignored": 1}
    assert stored(h.session_factory) == []


# --- paging and Pipedrive's limits --------------------------------------------------------


def test_more_than_a_page_of_closed_deals_is_read_page_by_page(harness, fake_pipedrive):
    add_lost_deals(fake_pipedrive, 150)  # closed since the day
    add_lost_deals(fake_pipedrive, 250, start=20_000, day=1)  # closed and updated before it
    since = datetime(2026, 11, 5, tzinfo=UTC)
    pages = list(pipedrive.closed_since(harness.rt, since))
    assert [len(p) for p in pages] == [100, 51]  # 150, and 4711
    keys = [key for page in pages for key, _ in page]
    assert len(set(keys)) == 151
    assert keys[0] == SYNC_KEY  # the most recently updated first
    assert keys[-1] == "deal:10000:sync:10000:lost:2026-11-10T00:00:00Z"
    lost = [c for c in fake_pipedrive.calls_to(DEALS) if c.query["status"] == ["lost"]]
    # The second page reaches deals updated before the day: no third page is asked for.
    assert [c.query["start"] for c in lost] == [["0"], ["100"]]
    assert {c.query["limit"][0] for c in lost} == {"100"}
    body = json.loads(pages[0][0][1])
    assert body["data"]["id"] == 4711 and body["meta"]["entity_id"] == "4711"


def test_every_page_is_read_when_every_deal_closed_since_the_day(harness, fake_pipedrive):
    add_lost_deals(fake_pipedrive, 250)
    pages = list(pipedrive.closed_since(harness.rt, datetime(2026, 11, 5, tzinfo=UTC)))
    assert [len(p) for p in pages] == [100, 100, 51]
    lost = [c for c in fake_pipedrive.calls_to(DEALS) if c.query["status"] == ["lost"]]
    assert [c.query["start"] for c in lost] == [["0"], ["100"], ["200"]]


def test_a_429_while_paging_is_waited_out_and_the_page_asked_again(harness, fake_pipedrive):
    add_lost_deals(fake_pipedrive, 150)
    fake_pipedrive.list_rate_limited_after = 2  # won, lost's first page; then 429, Retry-After 1
    began = time.monotonic()
    pages = list(pipedrive.closed_since(harness.rt, datetime(2026, 11, 5, tzinfo=UTC)))
    assert time.monotonic() - began >= 1.0
    assert [len(p) for p in pages] == [100, 51]
    assert [c.status for c in fake_pipedrive.calls_to(DEALS)] == [200, 200, 429, 200]


def test_a_429_that_lasts_keeps_what_was_found_and_the_next_run_takes_the_rest(
    harness, fake_pipedrive, monkeypatch
):
    h = harness
    add_lost_deals(fake_pipedrive, 150)
    monkeypatch.setattr(pipedrive, "LIST_TRIES", 1)  # give up on the first 429
    monkeypatch.setattr(deliveries_mod, "process", lambda rt, pks: None)  # stored only
    fake_pipedrive.list_rate_limited_after = 2
    since = datetime(2026, 11, 5, tzinfo=UTC)
    (first,) = deliveries_mod.sync(h.rt, since=since, sources=["pipedrive"])
    assert (first.found, first.new) == (100, 100) and "429" in (first.error or "")
    (second,) = deliveries_mod.sync(h.rt, since=since, sources=["pipedrive"])
    assert (second.found, second.new, second.error) == (151, 51, None)
    assert len(stored(h.session_factory)) == 151


def test_the_fake_refuses_a_list_pipedrive_refuses(fake_pipedrive):
    api = PipedriveApi(api_url=fake_pipedrive.url + "/api/v1", token=PD_TOKEN)
    for query in (
        {"status": "closed"},
        {"status": "won", "sort": "user_id.name ASC"},
        {"status": "won", "sort": "update_time SIDEWAYS"},
        {"status": "won", "start": "x"},
    ):
        with pytest.raises(PipedriveError) as err:
            api._get("/deals", query)
        assert err.value.status == 400
    wrong = PipedriveApi(api_url=fake_pipedrive.url + "/api/v1", token="wrong")
    with pytest.raises(PipedriveError) as err:
        wrong.closed_deals_page(status="lost")
    assert err.value.status == 401
    found, following = api.closed_deals_page(status="lost")
    assert [d["id"] for d in found] == [4711] and following is None
    assert api.closed_deals_page(status="open", limit=1)[1] is None  # 4713 only


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
def test_without_pipedrive_configured_the_daily_step_does_not_ask_it(harness, fake_pipedrive):
    tick(harness.rt)
    assert deliveries_mod.sync_due(harness.rt) is None
    assert fake_pipedrive.calls == []
