"""Imported leads are history: the running bot's tick never DMs their owner, never reminds and
never escalates them, however old or recent, rated or not; and a CRM hook reporting one of
them later is told it is known (so nobody is asked about it)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.jobs.leads import receive_lead
from bot.models import Lead, OutboxMessage
from bot.services import leadio
from bot.services.leads import LeadIn
from tests.harness import tick

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # the harness's clock, a Wednesday
HISTORY = f"""lead_id,person,owner,handed_at,status,reason,rated_at
hubspot:contact:51,Old and never rated,UANA,{(NOW - timedelta(days=10)).isoformat()},new,,
hubspot:contact:52,Handed an hour ago,UANA,{(NOW - timedelta(hours=1)).isoformat()},new,,
hubspot:contact:53,Rated late,UBEN,{(NOW - timedelta(days=5)).isoformat()},rejected,Bad data,\
{(NOW - timedelta(days=3)).isoformat()}
generic:9,Owner by email,ana@example.com,{(NOW - timedelta(hours=2)).isoformat()},new,,
"""


@pytest.fixture
def settings_overrides():
    return {
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "SALES_MANAGERS": "UMGR",
        "LEAD_SLA_HOURS": "24",
        "LEAD_REMINDER_HOURS": "18",
    }


def import_history(h) -> None:
    rows, rejected = leadio.read_leads(
        csv.reader(io.StringIO(HISTORY)),
        reasons=h.rt.settings.leads.reject_reasons,
        now=h.rt.now(),
    )
    assert rejected == [] and len(rows) == 4
    with session_scope(h.rt.session_factory) as session:
        result = leadio.import_leads(
            session,
            rows,
            s=h.rt.settings.leads,
            default_tz=h.rt.settings.default_timezone,
            now=h.rt.now(),
        )
    assert (result.new, result.rated) == (4, 1)


def sent(slack) -> list:
    """What went to the owners or the managers (the digest, say, is another matter)."""
    to = {"CMGR", *(who for u in ("UANA", "UBEN") for who in (u, slack.dm_channel_id(u)))}
    return [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] in to]


def test_the_tick_never_dms_reminds_or_escalates_an_imported_lead(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    import_history(h)
    with session_scope(h.rt.session_factory) as s:
        leads = {lead.external_id: lead for lead in s.scalars(select(Lead))}
        old, recent, late = (leads[f"hubspot:contact:{n}"] for n in (51, 52, 53))
        assert old.escalated_at == old.sla_due_at == old.handed_at + timedelta(hours=24)
        assert late.escalated_at == late.sla_due_at < late.first_response_at  # the breach
        assert recent.escalated_at == recent.sla_due_at > NOW  # never escalated by the tick
        assert {lead.origin for lead in leads.values()} == {"import"}
    for hours in (0, 1, 18, 19, 23, 24, 25, 26):  # lookup, reminder, escalation times
        clock.set(NOW + timedelta(hours=hours))
        tick(h.rt)
        h.settle()
    assert sent(slack) == []
    assert slack.calls_to("users.lookupByEmail") == []  # no owner was even looked up
    with session_scope(h.rt.session_factory) as s:
        keys = s.scalars(select(OutboxMessage.key)).all()
        about_a_lead = ("lead-nudge:", "lead-reminder:", "lead-overdue:", "lead-owner-missing:")
        assert [key for key in keys if key.startswith(about_a_lead)] == [], keys
        assert all(lead.nudge_ts is None for lead in s.scalars(select(Lead)))

    # The CRM's hook reports a lead already imported: known, so nobody is asked about it.
    pk, created = receive_lead(
        h.rt,
        LeadIn(external_id="hubspot:contact:51", person="Again", owner_user_id="UANA"),
        origin="crm",
    )
    assert created is False
    tick(h.rt)
    h.settle()
    assert sent(slack) == []
