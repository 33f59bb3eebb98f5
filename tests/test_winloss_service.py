"""Win/loss services as plain functions: parsing, the reason rule, authorisation, competitors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from bot.config import DEFAULT_REASON_CATEGORIES
from bot.models import Competitor, WinLossEntry
from bot.services import competitors as comp
from bot.services import deal_input
from bot.services import winloss as wl
from bot.services.errors import DomainError, NotAllowed

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
REASON = "They said the migration would take their two admins most of a quarter"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("won", "won"),
        ("LOST", "lost"),
        ("No decision", "no_decision"),
        ("no_decision", "no_decision"),
        ("No-Decision", "no_decision"),
    ],
)
def test_outcome_any_case(raw, expected):
    assert deal_input.parse_outcome(raw) == expected


def test_instants_are_utc_without_offset_and_keep_offsets():
    assert deal_input.parse_instant("2026-11-20T10:00:00", "t") == (
        datetime(2026, 11, 20, 10, tzinfo=UTC),
        False,
    )
    assert deal_input.parse_instant("2026-11-20T10:00:00+02:00", "t")[0] == datetime(
        2026, 11, 20, 8, tzinfo=UTC
    )
    assert deal_input.parse_instant("2026-11-20T10:00:00Z", "t")[0].hour == 10
    assert deal_input.parse_instant("2026-11-20", "t") == (datetime(2026, 11, 20, tzinfo=UTC), True)
    with pytest.raises(deal_input.InvalidField) as err:
        deal_input.parse_instant("20/11/2026", "closed_at")
    assert err.value.field == "closed_at"


def test_amounts():
    assert deal_input.parse_amount("12,500") == Decimal("12500.00")
    assert deal_input.parse_amount(99.5) == Decimal("99.50")
    assert deal_input.parse_amount("") is None and deal_input.parse_amount(None) is None
    for bad in ("lots", "-5", True, "NaN"):
        with pytest.raises(deal_input.InvalidField):
            deal_input.parse_amount(bad)


@pytest.mark.parametrize(
    "reason", ["poor fit", "price", "timing", "Price too high", "  went  dark  ", "n/a"]
)
def test_shorthand_reasons_are_refused(reason):
    assert wl.reason_problem(reason) is not None


def test_a_quote_is_accepted():
    assert wl.reason_problem('"We already pay for Salesforce forecasting"') is None


def test_deadline_counts_a_date_only_close_from_the_end_of_that_day():
    closed = datetime(2026, 11, 20, tzinfo=UTC)
    deadline = deal_input.deadline_for
    assert deadline(closed, date_only=False, hours=24) == closed + timedelta(hours=24)
    assert deadline(closed, date_only=True, hours=24) == closed + timedelta(hours=48)


def entry_in(**changes):
    values = dict(
        deal_name="Acme",
        outcome="lost",
        reason=REASON,
        reason_category="Price",
        competitor="Competitor X",
        insight="Lead with the migration plan",
        closed_on=date(2026, 11, 20),
    )
    values.update(changes)
    return wl.EntryIn(**values)


def log(db, user="UANA", **changes):
    return wl.log_entry(
        db,
        entry_in=entry_in(**changes),
        user_id=user,
        managers={"UMGR"},
        categories=DEFAULT_REASON_CATEGORIES,
        deadline_hours=24,
        tz=ZoneInfo("Europe/Berlin"),
        channel="CWL",
        now=NOW,
    )


def crm_deal(db, owner="UANA", deal_id="CRM-9"):
    deal, created = wl.receive_deal(
        db,
        deal=deal_input.parse_deal(
            {
                "deal_id": deal_id,
                "name": "Acme",
                "outcome": "lost",
                "closed_at": "2026-11-20T09:00:00Z",
                "owner_slack_id": owner,
            },
            now=NOW,
        ),
        deadline_hours=24,
        now=NOW,
    )
    db.flush()
    return deal, created


def test_same_crm_deal_twice_is_one_deal(db):
    first, created = crm_deal(db)
    second, created_again = crm_deal(db)
    assert created and not created_again and first.id == second.id


def test_only_owner_or_manager_logs_a_deal(db):
    deal, _ = crm_deal(db)
    with pytest.raises(NotAllowed):
        log(db, user="UBEN", deal_pk=deal.id)
    entry, post, edited = log(db, user="UMGR", deal_pk=deal.id)
    assert not edited and entry.author_user_id == "UMGR" and post.author_user_id == "UANA"
    assert entry.on_time is True  # logged 6 h after close


def test_entry_for_unknown_deal_uses_the_close_date_given(db):
    entry, _post, _ = log(db, closed_on=date(2026, 11, 18))
    deal = entry.deal
    assert deal.origin == "slack" and deal.external_id is None
    assert deal.closed_at == datetime(2026, 11, 17, 23, 0, tzinfo=UTC)  # midnight in Berlin
    assert entry.on_time is False  # the 18th's deadline was the end of the 19th


def test_editing_keeps_the_previous_text_and_stops_after_seven_days(db):
    entry, _post, _ = log(db)
    _, _, edited = log(db, deal_pk=entry.deal_id, reason=REASON + " and the quarter is full")
    assert edited and [r.reason for r in entry.revisions] == [REASON]
    with pytest.raises(NotAllowed):
        wl.entry_for_edit(db, entry_id=entry.id, user_id="UOUT", managers={"UMGR"}, now=NOW)
    assert wl.entry_for_edit(
        db, entry_id=entry.id, user_id="UMGR", managers={"UMGR"}, now=NOW + timedelta(days=6)
    )
    with pytest.raises(DomainError, match="7 days"):
        wl.entry_for_edit(
            db,
            entry_id=entry.id,
            user_id="UANA",
            managers=set(),
            now=NOW + timedelta(days=7, seconds=1),
        )


@pytest.mark.parametrize(
    "spelling", ["Competitor X", "competitor x ", "competitor-x", "COMPETITOR_X", "Competitor  X"]
)
def test_competitor_spellings_are_one(db, spelling):
    first = comp.get_or_create(db, "Competitor X")
    assert comp.get_or_create(db, spelling).id == first.id
    assert comp.normalise(spelling) == "competitor x"


def test_none_means_no_competitor(db):
    for none in (None, "", "none", "N/A", " No "):
        assert comp.get_or_create(db, none) is None


def test_merge_moves_entries_and_future_spellings(db):
    a, _, _ = log(db, competitor="Acme CRM")
    b, _, _ = log(db, deal_name="Beta", competitor="AcmeCRM")
    src, dst, moved = comp.merge(db, source="acmecrm", target="Acme CRM")
    assert (src.name, dst.name, moved) == ("AcmeCRM", "Acme CRM", 1)
    db.expire_all()
    assert {e.competitor_id for e in db.query(WinLossEntry)} == {dst.id}
    assert comp.get_or_create(db, "ACMECRM").id == dst.id
    assert [c.name for c in comp.known(db)] == ["Acme CRM"]
    with pytest.raises(DomainError):
        comp.merge(db, source="Nobody", target="Acme CRM")
    with pytest.raises(DomainError):
        comp.merge(db, source="acme crm", target="AcmeCRM")  # already one
    assert db.query(Competitor).count() == 2


@pytest.mark.parametrize(
    "reason",
    [
        "price, timing, poor fit",
        "n/a n/a",
        "Price and timing.",
        "budget / competitor / other / tbd",
    ],
)
def test_lists_of_labels_are_refused(reason):
    assert wl.reason_problem(reason) is not None


def test_editing_can_clear_amount_and_source(db):
    entry, _post, _ = log(db, amount=Decimal("10"), source="Webinar")
    log(db, deal_pk=entry.deal_id, amount=None, source=None)
    assert entry.deal.amount is None and entry.deal.source is None


def test_reminder_time_counts_back_from_the_deadline():
    closed = datetime(2026, 11, 20, tzinfo=UTC)
    deal = type("D", (), {"deadline_at": deal_input.deadline_for(closed, date_only=True, hours=24)})
    assert wl.reminder_time(deal, reminder_hours=20, deadline_hours=24) == closed + timedelta(
        hours=44
    )
