"""The lead loop's rules as plain functions: the SLA in working hours, the generic hook's
fields, the settings, and the rating rules on a session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.config import Settings
from bot.config_leads import DEFAULT_REJECT_REASONS, WorkingHours, lead_settings
from bot.config_values import ConfigError
from bot.models import Lead, LeadRating, LeadStatus
from bot.services import leads as lead_svc
from bot.services.deal_input import InvalidField
from bot.services.errors import DomainError, NotAllowed

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)


def working(text: str) -> WorkingHours:
    found = lead_settings({"LEAD_SLA_WORKING_HOURS": text}.get, digest_timezone="UTC")
    assert found.working_hours is not None
    return found.working_hours


def test_sla_in_plain_hours_and_in_working_hours_of_the_owner():
    start = datetime(2026, 11, 20, 16, 0, tzinfo=BERLIN)  # a Friday, 16:00 in Berlin
    assert lead_svc.sla_deadline(start, hours=24, working=None, tz=BERLIN) == start + timedelta(
        hours=24
    )
    office = working("mon-fri 09:00-17:00")
    # 1 hour on Friday, 8 on Monday, 8 on Tuesday, 7 on Wednesday: Wednesday 16:00.
    due = lead_svc.sla_deadline(start, hours=24, working=office, tz=BERLIN)
    assert due == datetime(2026, 11, 25, 16, 0, tzinfo=BERLIN)
    # Handed over on Saturday: the clock starts Monday 09:00.
    saturday = datetime(2026, 11, 21, 10, 0, tzinfo=BERLIN)
    due = lead_svc.sla_deadline(saturday, hours=2, working=office, tz=BERLIN)
    assert due == datetime(2026, 11, 23, 11, 0, tzinfo=BERLIN)
    # Across the end of daylight saving time (Oct 25 2026 in Berlin), wall-clock hours.
    before = datetime(2026, 10, 23, 16, 30, tzinfo=BERLIN)
    due = lead_svc.sla_deadline(before, hours=1, working=office, tz=BERLIN)
    assert due == datetime(2026, 10, 26, 9, 30, tzinfo=BERLIN)


def test_working_hours_setting_wraps_and_refuses_nonsense():
    assert working("fri-mon 08:00-12:00").days == frozenset({4, 5, 6, 0})
    assert str(working("mon 09:00-17:00")) == "mon 09:00-17:00"
    for bad in ("mon-fri", "mon-fri 17:00-09:00", "xyz 09:00-10:00", "mon-fri 25:00-26:00"):
        with pytest.raises(ConfigError, match="LEAD_SLA_WORKING_HOURS"):
            lead_settings({"LEAD_SLA_WORKING_HOURS": bad}.get, digest_timezone="UTC")


def test_lead_settings_defaults_and_every_problem_at_once():
    s = Settings.from_env(
        {"FEEDBACK_CHANNEL": "CMKTG", "WINLOSS_ESCALATION_CHANNEL": "CMGR"}, slack=False
    ).leads
    assert s.sla_hours == 24 and s.reminder_hours == 18 and s.rejection_alert == 0.3
    assert s.reject_reasons == DEFAULT_REJECT_REASONS and len(s.reject_reasons) == 6
    with pytest.raises(ConfigError) as err:
        lead_settings(
            {
                "LEAD_SLA_HOURS": "10",
                "LEAD_REMINDER_HOURS": "12",
                "LEAD_REJECT_REASONS": ",".join(f"r{i}" for i in range(8)),
                "LEAD_REJECTION_ALERT": "130%",
            }.get,
            digest_timezone="UTC",
        )
    assert [line.split("=")[0].split(" ")[0] for line in err.value.lines] == [
        "LEAD_REMINDER_HOURS",
        "LEAD_REJECTION_ALERT",
        "LEAD_REJECT_REASONS",
    ]
    assert (
        lead_settings({"LEAD_REJECTION_ALERT": "0.25"}.get, digest_timezone="UTC").rejection_alert
        == 0.25
    )


def test_the_generic_hook_names_the_bad_field():
    good = {"lead_id": "L-1", "name": "Jo", "owner_email": "Ana@Example.com", "source": "Ads"}
    lead = lead_svc.parse_lead(good, now=NOW)
    assert lead.external_id == "generic:L-1" and lead.owner_email == "ana@example.com"
    cases = [
        ({"name": "Jo", "owner_email": "a@b.co"}, "lead_id"),
        ({"lead_id": "1", "owner_email": "a@b.co"}, "name"),
        ({"lead_id": "1", "name": "Jo"}, "owner_email"),
        ({**good, "owner_slack_id": "ana"}, "owner_slack_id"),
        ({**good, "email": "not-an-email"}, "email"),
        ({**good, "handed_at": "2026-12-01T00:00:00Z"}, "handed_at"),  # the future
        ({**good, "handed_at": "2026-09-01T00:00:00Z"}, "handed_at"),  # history
        ({**good, "company": {"nested": 1}}, "company"),
        ({**good, "source": "a\x00b"}, "source"),
    ]
    for data, field in cases:
        with pytest.raises(InvalidField) as err:
            lead_svc.parse_lead(data, now=NOW)
        assert err.value.field == field, (data, err.value)


def _lead(session, **changes) -> Lead:
    lead = Lead(
        person="Jo",
        origin="hook",
        owner_user_id="UANA",
        handed_at=NOW,
        sla_due_at=NOW + timedelta(hours=24),
        status=LeadStatus.NEW,
        **changes,
    )
    session.add(lead)
    session.flush()
    return lead


def test_rating_rules(db):
    session = db
    lead = _lead(session)
    rate = lead_svc.rate
    args = {"managers": ("UMGR",), "reasons": DEFAULT_REJECT_REASONS}
    with pytest.raises(NotAllowed):
        rate(session, lead_pk=lead.id, rating="accepted", user_id="UBEN", now=NOW, **args)
    with pytest.raises(DomainError, match="choose why"):
        rate(session, lead_pk=lead.id, rating="rejected", user_id="UANA", now=NOW, **args)
    with pytest.raises(DomainError, match="choose why"):
        rate(
            session,
            lead_pk=lead.id,
            rating="rejected",
            reason="Meh",
            user_id="UANA",
            now=NOW,
            **args,
        )
    with pytest.raises(DomainError):
        rate(session, lead_pk=lead.id, rating="new", user_id="UANA", now=NOW, **args)
    first = rate(
        session,
        lead_pk=lead.id,
        rating="rejected",
        reason="Duplicate",
        user_id="UANA",
        now=NOW,
        **args,
    )
    assert first is not None and lead.status == LeadStatus.REJECTED
    same = rate(
        session,
        lead_pk=lead.id,
        rating="rejected",
        reason="Duplicate",
        user_id="UANA",
        now=NOW,
        **args,
    )
    assert same is None
    later = NOW + timedelta(days=6, hours=23)
    assert rate(session, lead_pk=lead.id, rating="accepted", user_id="UMGR", now=later, **args)
    assert lead.first_response_at == NOW and lead.status == LeadStatus.ACCEPTED
    assert [r.rating for r in session.query(LeadRating).order_by(LeadRating.id)] == [
        "rejected",
        "accepted",
    ]
    with pytest.raises(DomainError, match="7 days"):
        rate(
            session,
            lead_pk=lead.id,
            rating="not_ready",
            user_id="UANA",
            now=NOW + timedelta(days=7, seconds=1),
            **args,
        )


def test_only_marketing_hands_off():
    lead_svc.check_may_hand_off("UMIA", {"UMIA"})
    with pytest.raises(NotAllowed, match="marketing"):
        lead_svc.check_may_hand_off("UANA", {"UMIA"})


def test_history_waits_on_no_one(db):
    _lead(db)  # from a hook: waiting on Ana
    imported = Lead(
        person="Old",
        origin="import",
        owner_user_id="UANA",
        handed_at=NOW - timedelta(days=90),
        sla_due_at=NOW - timedelta(days=89),
        status=LeadStatus.NEW,
    )
    db.add(imported)
    db.flush()
    assert [lead.person for lead in lead_svc.waiting_leads(db, user_id="UANA")] == ["Jo"]
    assert [lead.person for lead in lead_svc.waiting_leads(db, user_id="X", manager=True)] == ["Jo"]
