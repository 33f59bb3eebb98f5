"""The lead hand-off loop driven as Slack drives it: marketing's /lead, the owner's DM and its
three ratings, the reject modal, the 7-day change window, who may do what, and the SLA's
reminder and escalation (once, however many processes tick)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bot.db import session_scope
from bot.jobs.leads import nudge_new_lead, receive_lead
from bot.models import Lead, LeadDefinition, LeadRating, LeadStatus
from bot.services.leads import LeadIn
from tests.harness import sample, tick
from tests.test_loop_scenario import all_text, dms_to, stored

HANDED = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday (the harness's clock)


@pytest.fixture
def settings_overrides():
    return {
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "SALES_MANAGERS": "UMGR",
        "LEAD_SLA_HOURS": "24",
        "LEAD_REMINDER_HOURS": "18",
    }


def submit_view(h, user_id: str, view: dict, values: dict[str, str | None]):
    """Submit a modal the bot opened, as Slack sends each kind of element's state."""
    payload = sample("view_submission.bolt_python_test.json")
    payload["trigger_id"] = h.slack.new_trigger_id()
    payload["user"] = {"id": user_id, "username": user_id.lower(), "team_id": "T111"}
    submitted = dict(payload["view"])
    submitted.update(
        blocks=view["blocks"],
        callback_id=view["callback_id"],
        private_metadata=view.get("private_metadata", ""),
        title=view["title"],
    )
    state: dict = {}
    for block in view["blocks"]:
        if block.get("type") != "input":
            continue
        element, block_id = block["element"], block["block_id"]
        value = values.get(block_id)
        kind = element["type"]
        if kind == "static_select":
            option = next((o for o in element["options"] if o["value"] == value), None)
            entry = {"type": kind, "selected_option": option}
        elif kind == "users_select":
            entry = {"type": kind, "selected_user": value}
        else:
            entry = {"type": kind, "value": value}
        state[block_id] = {element["action_id"]: entry}
    submitted["state"] = {"values": state}
    payload["view"] = submitted
    return h.interactive(payload)


def lead_dms(slack, user_id):
    return [c for c in dms_to(slack, user_id) if "lead_accept" in all_text(c.params)]


def ratings(h) -> list[tuple[str, str | None, str, int | None]]:
    with session_scope(h.rt.session_factory) as s:
        return [
            (r.rating, r.reason, r.rated_by, r.definition_version)
            for r in s.scalars(select(LeadRating).order_by(LeadRating.id))
        ]


def the_lead(h) -> Lead:
    with session_scope(h.rt.session_factory) as s:
        lead = s.scalars(select(Lead)).one()
        s.expunge(lead)
        return lead


def hand_over(h, **changes) -> int:
    """A lead arriving from a CRM (the intake's entry point), its owner's DM sent."""
    fields = {
        "external_id": "generic:L-1",
        "person": "Jo <!channel> Park",
        "owner_email": "ana@example.com",
        "company": "Acme & Co",
        "source": "Webinar",
        "campaign": "Q4 launch",
        "context": "Downloaded the pricing guide twice; asked about SSO.",
    }
    fields.update(changes)
    pk, created = receive_lead(h.rt, LeadIn(**fields), origin="hook")
    assert created
    nudge_new_lead(h.rt, pk)
    h.settle()
    return pk


def test_marketing_hands_over_with_lead_and_the_owner_rejects_with_a_reason(harness):
    h, slack = harness, harness.slack
    with session_scope(h.rt.session_factory) as s:
        s.add(LeadDefinition(version=1, summary="ICP fit and a demo request", sections={}))

    # Someone outside marketing gets no form.
    h.command("UOUT", "", command="/lead")
    assert slack.calls_to("views.open") == []
    assert "Only the marketing team" in all_text(dms_to(slack, "UOUT")[-1].params)

    h.command("UMIA", "", command="/lead")
    (opened,) = slack.calls_to("views.open")
    modal = opened.params["view"]
    refused = submit_view(h, "UMIA", modal, {"person": "Jo Park", "company": "", "owner": None})
    assert set(refused.json()["errors"]) == {"company", "source", "owner"}
    assert lead_dms(slack, "UANA") == []

    accepted = submit_view(
        h,
        "UMIA",
        modal,
        {
            "person": "Jo <!channel> Park",
            "company": "Acme & Co",
            "title": "VP Sales",
            "source": "Webinar",
            "campaign": "Q4 launch",
            "context": "Asked about SSO <@UBEN>",
            "owner": "UANA",
        },
    )
    assert accepted.status == 200 and accepted.body == ""
    again = submit_view(  # the same modal's submission arriving twice: one lead, one DM
        h, "UMIA", modal, {"person": "Jo", "company": "A", "source": "W", "owner": "UANA"}
    )
    assert again.status == 200
    with session_scope(h.rt.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Lead)) == 1
    (dm,) = lead_dms(slack, "UANA")
    text = all_text(dm.params)
    assert "Jo &lt;!channel&gt; Park" in text and "<!channel>" not in text
    assert "Acme &amp; Co" in text and "<@UBEN>" not in text
    assert "definition v1" in text and "ICP fit and a demo request" in text
    assert "handed to <@UANA>" in all_text(dms_to(slack, "UMIA")[-1].params)
    lead = the_lead(h)
    assert lead.handed_by == "UMIA" and lead.origin == "slack" and lead.definition_version == 1
    assert lead.sla_due_at == HANDED + timedelta(hours=24)

    # Reject…: the reason is required, from the taxonomy.
    h.click_button("UANA", stored(slack, dm), dm.response["channel"], "lead_reject")
    reject = slack.calls_to("views.open")[-1].params["view"]
    reasons = [o["value"] for o in reject["blocks"][1]["element"]["options"]]
    assert reasons == list(h.settings.leads.reject_reasons) and len(reasons) == 6
    no_reason = submit_view(h, "UANA", reject, {"reason": None, "note": "x"})
    assert "reason" in no_reason.json()["errors"] and ratings(h) == []
    done = submit_view(h, "UANA", reject, {"reason": "Bad data", "note": "Bounced <!here>"})
    assert done.status == 200 and done.body == ""
    assert ratings(h) == [("rejected", "Bad data", "UANA", 1)]
    updated = slack.calls_to("chat.update")[-1].params
    assert updated["ts"] == dm.response["ts"]
    shown = all_text(updated)
    assert "Rejected: Bad data" in shown and "Bounced &lt;!here&gt;" in shown
    lead = the_lead(h)
    assert lead.status == LeadStatus.REJECTED and lead.first_response_at == HANDED


def test_only_the_owner_or_a_manager_rates_and_changes_stop_after_7_days(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    hand_over(h)
    (dm,) = lead_dms(slack, "UANA")
    message, channel = stored(slack, dm), dm.response["channel"]

    # Another rep may not rate Ana's lead, nor open its reject form.
    h.click_button("UBEN", message, channel, "lead_accept")
    h.click_button("UBEN", message, channel, "lead_reject")
    assert ratings(h) == [] and slack.calls_to("views.open") == []
    told = [all_text(c.params) for c in dms_to(slack, "UBEN")]
    assert sum("owner or a sales manager" in t for t in told) == 2

    h.click_button("UANA", message, channel, "lead_accept")
    h.click_button("UANA", message, channel, "lead_accept")  # twice: recorded once
    assert ratings(h) == [("accepted", None, "UANA", None)]
    assert "Accepted" in all_text(slack.calls_to("chat.update")[-1].params)

    clock.advance(days=6)
    h.click_button("UMGR", stored(slack, dm), channel, "lead_not_ready")  # a manager may
    assert [r[0] for r in ratings(h)] == ["accepted", "not_ready"]
    assert the_lead(h).status == LeadStatus.NOT_READY
    assert the_lead(h).first_response_at == HANDED  # the first response stays the first

    clock.advance(days=2)
    h.click_button("UANA", stored(slack, dm), channel, "lead_accept")
    assert len(ratings(h)) == 2
    assert "can no longer be changed" in all_text(dms_to(slack, "UANA")[-1].params)


def test_reminder_before_the_sla_then_escalation_once_and_the_breach_recorded(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    hand_over(h)
    assert len(lead_dms(slack, "UANA")) == 1
    clock.set(HANDED + timedelta(hours=17, minutes=59))
    tick(h.rt)
    assert len(lead_dms(slack, "UANA")) == 1
    clock.set(HANDED + timedelta(hours=18))
    h.tick_together(3)
    dms = lead_dms(slack, "UANA")
    assert len(dms) == 2 and "Reminder" in dms[1].params["text"]
    managers = [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] == "CMGR"]
    assert managers == []

    clock.set(HANDED + timedelta(hours=24))
    h.tick_together(3)
    tick(h.rt)
    managers = [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] == "CMGR"]
    assert len(managers) == 1
    text = all_text(managers[0].params)
    assert "has not been rated 24 hours" in text and "ana" in text and "<@UANA>" not in text
    assert the_lead(h).escalated_at == HANDED + timedelta(hours=24)

    # Rated late, from the managers' message: the breach stays on record.
    clock.set(HANDED + timedelta(hours=30))
    h.click_button("UANA", stored(slack, managers[0]), "CMGR", "lead_accept")
    lead = the_lead(h)
    assert lead.first_response_at == HANDED + timedelta(hours=30) > lead.sla_due_at
    assert "after the SLA" in all_text(slack.calls_to("chat.update")[-1].params)
    assert len(lead_dms(slack, "UANA")) == 2  # nothing more is sent to the owner


def test_an_owner_slack_does_not_know_goes_to_the_managers(harness):
    h, slack = harness, harness.slack
    hand_over(h, owner_email="nobody@example.com")
    managers = [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] == "CMGR"]
    assert len(managers) == 1
    assert "could not be reached in Slack" in all_text(managers[0].params)
    h.click_button("UMGR", stored(slack, managers[0]), "CMGR", "lead_accept")
    assert ratings(h) == [("accepted", None, "UMGR", None)]
    with session_scope(h.rt.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Lead)) == 1


def test_the_home_tab_shows_a_rep_the_leads_waiting_on_them_with_the_time_left(harness):
    from tests.test_home import home_of, open_home

    h, slack, clock = harness, harness.slack, harness.clock
    hand_over(h)
    clock.set(HANDED + timedelta(hours=3, minutes=30))
    open_home(h, "UANA")
    home = home_of(slack, "UANA")
    assert "Leads waiting for your rating (1)" in home
    assert "Jo &lt;!channel&gt; Park" in home and "20 h 30 min left" in home
    open_home(h, "UBEN")
    assert "Leads waiting" not in home_of(slack, "UBEN")

    # Rated from the Home tab (no channel): recorded, and the tab no longer lists it.
    view = slack.home_views["UANA"]
    button = next(
        e
        for b in view["blocks"]
        for e in b.get("elements") or []
        if e.get("action_id") == "lead_accept"
    )
    h.click("UANA", "lead_accept", button["value"], channel="", message_ts="")
    assert ratings(h) == [("accepted", None, "UANA", None)]
    assert "Leads waiting" not in home_of(slack, "UANA")


def test_marketing_home_shows_last_weeks_leads_and_the_sources_over_the_alert(harness):
    from tests.test_home import home_of, open_home

    h = harness
    handed = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)  # last week (2026-W46)
    with session_scope(h.rt.session_factory) as s:
        for i, (source, status) in enumerate(
            [("Webinar <b>", LeadStatus.REJECTED)] * 4
            + [("Webinar <b>", LeadStatus.ACCEPTED)] * 6
            + [("Ads", LeadStatus.ACCEPTED)] * 3
        ):
            s.add(
                Lead(
                    external_id=f"import:{i}",
                    origin="import",
                    person="Pat",
                    source=source,
                    handed_at=handed,
                    received_at=handed,
                    sla_due_at=handed + timedelta(hours=24),
                    status=status,
                    first_response_at=handed + timedelta(hours=2),
                )
            )
    open_home(h, "UMIA")
    home = home_of(h.slack, "UMIA")
    assert "Leads last week (2026-W46)" in home and "13 handed to sales" in home
    assert ":warning: Webinar &lt;b&gt;: rejected 40% (4 of 10)" in home
    assert ":warning: Ads" not in home
    open_home(h, "UANA")  # a rep: no marketing figures
    assert "Leads last week" not in home_of(h.slack, "UANA")


def test_a_dm_waiting_in_the_outbox_is_not_looked_up_again(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    slack.fail_next("chat.postMessage", status=500, times=20)  # Slack keeps failing the DM
    hand_over(h)
    lookups = len(slack.calls_to("users.lookupByEmail"))
    assert lookups == 1 and lead_dms(slack, "UANA") == []
    for _ in range(4):  # the lead is past the 2-minute claim each time
        clock.advance(minutes=3)
        tick(h.rt)
    assert len(slack.calls_to("users.lookupByEmail")) == lookups
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Lead.nudge_attempts)).one() == 1
        assert s.scalars(select(Lead.owner_missing_reported_at)).one() is None
