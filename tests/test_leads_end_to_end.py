"""The lead loop's Done-when scenario, end to end as HubSpot and Slack drive it: HubSpot's
signed lifecycle change -> POST /hooks/hubspot -> the contact read -> the owner's DM in the
fake Slack -> *Reject…* with a reason from the taxonomy -> stored, with the definition version
in force; the same event again changes nothing. And the generic signed POST /hooks/lead to the
same DM, accepted from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.models import Lead, LeadDefinition, LeadRating, LeadStatus
from tests.test_hubspot import (  # noqa: F401 - fixtures
    fake_hubspot,
    post_hubspot,
    settings_overrides,
)
from tests.test_hubspot_leads import HANDED, contact, contact_events  # noqa: F401
from tests.test_lead_hook import SECRET, lead_body, post_lead
from tests.test_leads_scenario import lead_dms, submit_view
from tests.test_loop_scenario import all_text, stored


def test_a_hubspot_mql_reaches_its_owner_and_is_rejected_with_a_reason(harness, contact):  # noqa: F811
    h, slack = harness, harness.slack
    with session_scope(h.rt.session_factory) as s:
        s.add(LeadDefinition(version=3, summary="50+ staff and a demo request", sections={}))
    h.clock.set(HANDED + timedelta(minutes=5))
    assert post_hubspot(h, contact_events({})).status == 200

    (dm,) = lead_dms(slack, "UANA")
    text = all_text(dm.params)
    assert "Dana Whitfield" in text and "Northwind Traders" in text and "Paid search" in text
    assert "definition v3" in text and "50+ staff and a demo request" in text
    assert "rate it by" in text

    h.click_button("UANA", stored(slack, dm), dm.response["channel"], "lead_reject")
    modal = slack.calls_to("views.open")[-1].params["view"]
    reply = submit_view(
        h, "UANA", modal, {"reason": "Bad fit: company size", "note": "12 people, not 50"}
    )
    assert reply.status == 200 and reply.body == ""
    with session_scope(h.rt.session_factory) as s:
        lead = s.scalars(select(Lead)).one()
        (rating,) = s.scalars(select(LeadRating)).all()
        assert lead.external_id == "hubspot:contact:5101" and lead.status == LeadStatus.REJECTED
        assert (rating.reason, rating.note, rating.rated_by, rating.definition_version) == (
            "Bad fit: company size",
            "12 people, not 50",
            "UANA",
            3,
        )
    assert "Rejected: Bad fit: company size" in all_text(slack.calls_to("chat.update")[-1].params)

    # HubSpot's retry of the same event: nothing new, nobody asked twice.
    post_hubspot(h, contact_events({"attemptNumber": 2}))
    assert len(lead_dms(slack, "UANA")) == 1


@pytest.mark.parametrize("settings_overrides", [{"DEALS_WEBHOOK_SECRET": SECRET}], indirect=True)
def test_the_generic_hook_to_the_owners_dm_and_accepted(harness):
    h, slack = harness, harness.slack
    h.clock.set(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    reply = post_lead(h, lead_body(owner_email="ben@example.com", context="Wants <!channel> SSO"))
    assert reply.status == 201, reply.body
    (dm,) = lead_dms(slack, "UBEN")
    assert "Wants &lt;!channel&gt; SSO" in all_text(dm.params)
    h.click_button("UBEN", stored(slack, dm), dm.response["channel"], "lead_accept")
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Lead.status)).one() == LeadStatus.ACCEPTED
    assert post_lead(h, lead_body(owner_email="ben@example.com")).status == 200  # a retry
    assert len(lead_dms(slack, "UBEN")) == 1
