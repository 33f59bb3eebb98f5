"""The daily reconciliation with HubSpot (webhooks get dropped): the deals HubSpot's search
finds closed since a day are stored as deliveries once and processed as webhooks are, by
``closeloop crm sync --since`` and by the tick once a day; nobody is asked twice."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.intake import deliveries as deliveries_mod
from bot.intake import hubspot
from bot.intake.hubspot_api import HubSpotApi, HubSpotError
from bot.models import CrmDelivery, Deal, InboxState, JobRun
from tests.conftest import closeloop, installed_long_ago
from tests.fakehubspot import FakeHubSpot
from tests.harness import tick
from tests.test_hubspot import CLIENT_SECRET, CLOSED, HS_TOKEN, events, post_hubspot
from tests.test_winloss_scenario import nudges_to

SEARCH = "/crm/v3/objects/deals/search"


@pytest.fixture
def fake_hubspot():
    from bot.intake import hubspot_api

    hubspot_api._stages.clear()  # a port may come round again: no pipelines of an old fake
    fake = FakeHubSpot(token=HS_TOKEN)
    fake.start()
    fake.add_owner("42", "ana@example.com")
    fake.set_deal("9001")  # closed lost 2026-11-20 14:00, owner 42: its webhook never came
    fake.set_deal("9002", dealstage="contractsent", closedate="2026-11-19T10:00:00Z")  # open
    fake.set_deal("9003", closedate="2026-10-02T10:00:00Z")  # closed long before
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def settings_overrides(fake_hubspot):
    return {
        "WINLOSS_CHANNEL": "CWINLOSS",
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "SALES_MANAGERS": "UMGR",
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_ACCESS_TOKEN": HS_TOKEN,
        "HUBSPOT_API_URL": fake_hubspot.url,
    }


def hubspot_env(cli_env, fake_hubspot, **changes):
    env = {
        **cli_env,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_ACCESS_TOKEN": HS_TOKEN,
        "HUBSPOT_API_URL": fake_hubspot.url,
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


def add_closed_deals(fake: FakeHubSpot, n: int, *, start: int = 10_000) -> None:
    for i in range(n):
        closed = datetime(2026, 11, 10, tzinfo=UTC) + timedelta(minutes=i)
        fake.set_deal(str(start + i), closedate=closed.isoformat().replace("+00:00", "Z"))


# --- closeloop crm sync -------------------------------------------------------------------


def test_crm_sync_takes_in_a_deal_whose_webhook_was_dropped_once(
    cli_env, fake_slack, fake_hubspot, session_factory
):
    env = hubspot_env(cli_env, fake_hubspot)
    out = closeloop(env, "crm", "sync", "--since", "2026-11-01")
    assert out.returncode == 0, out.stdout + out.stderr
    hubspot_line, pipedrive_line = out.stdout.splitlines()  # every CRM, without --source
    assert hubspot_line == "hubspot: found 1 closed deals since 2026-11-01, 1 new"
    assert pipedrive_line.startswith("pipedrive: not configured, skipped")
    (deal,) = deals(session_factory)
    assert deal.external_id == "hubspot:9001" and deal.outcome == "lost"
    assert deal.crm_reason == "Price" and deal.owner_email == "ana@example.com"
    assert len(nudges_to(fake_slack, "UANA")) == 1
    (delivery,) = stored(session_factory)
    assert delivery.source == "hubspot" and delivery.state == InboxState.DONE
    assert delivery.delivery_id == "sync:9001:2026-11-20T14:00:00Z:closedlost"
    # HubSpot was asked as it documents: closed stages only, closed since the day, paged.
    (search,) = fake_hubspot.calls_to(SEARCH)
    assert search.method == "POST" and search.status == 200
    (group,) = search.body["filterGroups"]
    since_ms = str(int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000))
    assert {"propertyName": "closedate", "operator": "GTE", "value": since_ms} in group["filters"]
    (stages,) = [f for f in group["filters"] if f["propertyName"] == "dealstage"]
    assert sorted(stages["values"]) == ["31415928", "31415929", "closedlost", "closedwon"]
    assert search.body["limit"] == 100

    again = closeloop(env, "crm", "sync", "--since", "2026-11-01", "--source", "hubspot")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines() == ["hubspot: found 1 closed deals since 2026-11-01, 0 new"]
    assert len(deals(session_factory)) == 1 and len(stored(session_factory)) == 1
    assert len(nudges_to(fake_slack, "UANA")) == 1

    # Further back, the October deal too.
    older = closeloop(env, "crm", "sync", "--since", "2026-10-01", "--source", "hubspot")
    assert older.stdout.splitlines() == ["hubspot: found 2 closed deals since 2026-10-01, 1 new"]
    assert [d.external_id for d in deals(session_factory)] == ["hubspot:9001", "hubspot:9003"]


def test_crm_sync_with_a_token_hubspot_refuses_is_one_line_and_exit_1(
    cli_env, fake_slack, fake_hubspot, session_factory
):
    env = hubspot_env(cli_env, fake_hubspot, HUBSPOT_ACCESS_TOKEN="pat-na1-wrong")
    out = closeloop(env, "crm", "sync", "--since", "2026-11-01", "--source", "hubspot")
    assert out.returncode == 1
    assert out.stdout == ""
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("closeloop:")]  # (and the log)
    assert line.startswith("closeloop: hubspot: stopped after 0 closed deals (0 new): HubSpot 401")
    assert stored(session_factory) == [] and nudges_to(fake_slack, "UANA") == []


def test_crm_sync_without_hubspot_configured_is_a_note_and_exit_0(cli_env, fake_slack):
    out = closeloop(cli_env, "crm", "sync", "--since", "2026-11-01")
    assert out.returncode == 0, out.stderr
    hubspot_line, pipedrive_line = out.stdout.splitlines()
    assert hubspot_line.startswith("hubspot: not configured, skipped")
    assert pipedrive_line.startswith("pipedrive: not configured, skipped")
    bad = closeloop(cli_env, "crm", "sync", "--since", "2026-13-01")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


# --- the daily tick -----------------------------------------------------------------------


def test_the_daily_tick_takes_in_a_dropped_deal_once_a_day(harness, fake_hubspot):
    h = harness
    h.clock.set(CLOSED + timedelta(hours=2))
    tick(h.rt)
    h.settle()
    (deal,) = deals(h.session_factory)
    assert deal.external_id == "hubspot:9001"
    assert len(nudges_to(h.slack, "UANA")) == 1
    (search,) = fake_hubspot.calls_to(SEARCH)
    (group,) = search.body["filterGroups"]
    back = h.clock() - timedelta(days=3)  # CRM_SYNC_DAYS
    assert group["filters"][0]["value"] == str(int(back.timestamp() * 1000))
    # Later ticks, this process or another one (a restart): not again today.
    tick(h.rt)
    h.clock.advance(hours=23)
    tick(h.another_process())
    assert len(fake_hubspot.calls_to(SEARCH)) == 1
    # The next day it runs again, finds the same deal, and asks nobody twice.
    h.clock.advance(hours=1, minutes=1)
    tick(h.another_process())
    h.settle()
    assert len(fake_hubspot.calls_to(SEARCH)) == 2
    assert len(stored(h.session_factory)) == 1 and len(deals(h.session_factory)) == 1
    assert len(nudges_to(h.slack, "UANA")) == 1


def test_a_deal_that_came_by_webhook_and_is_found_by_the_sync_is_one_dm(harness, fake_hubspot):
    h = harness
    h.clock.set(CLOSED + timedelta(minutes=1))
    assert post_hubspot(h, events({})).json()["stored"] == 1
    assert len(nudges_to(h.slack, "UANA")) == 1
    tick(h.rt)  # the day's sync finds it: stored as its own delivery, taken in once
    h.settle()
    rows = stored(h.session_factory)
    assert [r.delivery_id for r in rows] == [
        "1753399442",
        "sync:9001:2026-11-20T14:00:00Z:closedlost",
    ]
    assert rows[1].state == InboxState.DONE and "already received" in rows[1].note
    assert len(deals(h.session_factory)) == 1
    assert len(nudges_to(h.slack, "UANA")) == 1


def test_a_sync_hubspot_fails_is_tried_again_in_an_hour_not_every_minute(harness, fake_hubspot):
    h = harness
    h.clock.set(CLOSED + timedelta(hours=2))
    fake_hubspot.down = True
    tick(h.rt)
    h.clock.advance(minutes=30)
    tick(h.rt)
    with session_scope(h.session_factory) as s:
        job = s.get(JobRun, "crm-sync")
        assert job is not None and "503" in job.last_error and job.ok_at is None
    assert len(fake_hubspot.calls_to("/crm/v3/pipelines/deals")) == 1
    fake_hubspot.down = False
    h.clock.advance(minutes=31)
    tick(h.rt)
    h.settle()
    assert len(nudges_to(h.slack, "UANA")) == 1
    with session_scope(h.session_factory) as s:
        job = s.get(JobRun, "crm-sync")
        assert job is not None and job.last_error is None and job.ok_at == h.clock()


def test_the_daily_sync_never_reaches_back_before_the_installation_began(harness, fake_hubspot):
    from bot.models import Installation

    h = harness
    h.clock.set(CLOSED + timedelta(hours=2))
    with session_scope(h.session_factory) as s:
        s.get(Installation, 1).started_at = CLOSED + timedelta(hours=1)
    tick(h.rt)
    (search,) = fake_hubspot.calls_to(SEARCH)
    started_ms = int((CLOSED + timedelta(hours=1)).timestamp() * 1000)
    assert search.body["filterGroups"][0]["filters"][0]["value"] == str(started_ms)
    assert deals(h.session_factory) == []


# --- paging and HubSpot's limits ----------------------------------------------------------


def test_more_than_a_page_of_closed_deals_is_read_page_by_page(harness, fake_hubspot):
    add_closed_deals(fake_hubspot, 150)
    since = datetime(2026, 11, 1, tzinfo=UTC)
    pages = list(hubspot.closed_since(harness.rt, since))
    assert [len(p) for p in pages] == [100, 51]  # 150, and 9001
    keys = [key for page in pages for key, _ in page]
    assert len(set(keys)) == 151
    assert keys[0] == "sync:10000:2026-11-10T00:00:00Z:closedlost"  # oldest close first
    searches = fake_hubspot.calls_to(SEARCH)
    assert [c.body.get("after") for c in searches] == [None, "100"]
    assert {c.body["limit"] for c in searches} == {100}
    body = json.loads(pages[0][0][1])
    assert body["objectId"] == "10000" and body["properties"]["dealstage"] == "closedlost"


def test_a_429_while_paging_is_waited_out_and_the_page_asked_again(harness, fake_hubspot):
    add_closed_deals(fake_hubspot, 150)
    fake_hubspot.search_rate_limited_after = 1  # the second page: 429, Retry-After 1
    began = time.monotonic()
    pages = list(hubspot.closed_since(harness.rt, datetime(2026, 11, 1, tzinfo=UTC)))
    assert time.monotonic() - began >= 1.0
    assert [len(p) for p in pages] == [100, 51]
    assert [c.status for c in fake_hubspot.calls_to(SEARCH)] == [200, 429, 200]


def test_a_429_that_lasts_keeps_what_was_found_and_the_next_run_takes_the_rest(
    harness, fake_hubspot, monkeypatch
):
    h = harness
    add_closed_deals(fake_hubspot, 150)
    monkeypatch.setattr(hubspot, "SEARCH_TRIES", 1)  # give up on the first 429
    monkeypatch.setattr(deliveries_mod, "process", lambda rt, pks: None)  # stored only
    fake_hubspot.search_rate_limited_after = 1
    since = datetime(2026, 11, 1, tzinfo=UTC)
    (first,) = deliveries_mod.sync(h.rt, since=since, sources=["hubspot"])
    assert (first.found, first.new) == (100, 100) and "429" in first.error
    assert len(stored(h.session_factory)) == 100
    (second,) = deliveries_mod.sync(h.rt, since=since, sources=["hubspot"])
    assert (second.found, second.new, second.error) == (151, 51, None)
    assert len(stored(h.session_factory)) == 151


def test_the_fake_refuses_a_search_hubspot_refuses(fake_hubspot):
    api = HubSpotApi(api_url=fake_hubspot.url, token=HS_TOKEN)
    since = datetime(2026, 11, 1, tzinfo=UTC)
    for body in (
        {"filterGroups": [{"filters": [{"propertyName": "closedate", "operator": "AFTER"}]}]},
        {"filterGroups": [{"filters": []}]},
        {"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "1"}]}]},
        {"limit": 101},
        {"after": "9950", "limit": 100},
    ):
        with pytest.raises(HubSpotError) as err:
            api._request("POST", SEARCH, body=body)
        assert err.value.status == 400
    wrong = HubSpotApi(api_url=fake_hubspot.url, token="pat-wrong")
    with pytest.raises(HubSpotError) as err:
        wrong.closed_deals_page(since=since, stages=["closedwon"])
    assert err.value.status == 401
    found, after = api.closed_deals_page(since=since, stages=["closedlost"])
    assert [d["hs_object_id"] for d in found] == ["9001"] and after is None


@pytest.mark.parametrize(
    "settings_overrides",
    [{"HUBSPOT_CLIENT_SECRET": None, "HUBSPOT_ACCESS_TOKEN": None}],
)
def test_without_a_crm_configured_the_daily_step_writes_nothing(harness, settings_overrides):
    tick(harness.rt)
    assert deliveries_mod.sync_due(harness.rt) is None
    with session_scope(harness.session_factory) as s:
        assert s.scalars(select(JobRun)).all() == []


def test_a_day_not_due_is_looked_at_without_writing(harness, fake_hubspot, monkeypatch):
    from bot.services import job_runs

    h = harness
    h.clock.set(CLOSED + timedelta(hours=2))
    assert deliveries_mod.sync_due(h.rt) is not None
    writes = []
    real = job_runs.update

    def counting(*args, **kwargs):
        writes.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(job_runs, "update", counting)
    h.clock.advance(hours=1)
    assert deliveries_mod.sync_due(h.rt) is None
    assert writes == []


def test_closeloop_tick_from_cron_runs_the_days_sync_and_sends_the_dm(
    cli_env, fake_slack, fake_hubspot, session_factory
):
    """`closeloop tick` (cron): the tick's sync reaches back CRM_SYNC_DAYS from now."""
    installed_long_ago(session_factory)
    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=5)
    fake_hubspot.set_deal("9001", closedate=recent.isoformat().replace("+00:00", "Z"))
    env = hubspot_env(cli_env, fake_hubspot)
    for _ in range(2):
        out = closeloop(env, "tick")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Traceback" not in out.stderr, out.stderr
    assert [d.external_id for d in deals(session_factory)] == ["hubspot:9001"]
    assert len(fake_hubspot.calls_to(SEARCH)) == 1
    assert len(nudges_to(fake_slack, "UANA")) == 1
