"""The definition of a qualified lead end to end, through signed Slack requests and the fake
Slack: /closeloop definition, the editor (edited twice: three versions), the channels told,
the quarterly review DM (once per owner, under Slack's faults, across processes), its
buttons, and the admins' Home tab."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from sqlalchemy import delete, func, select

from bot.db import session_scope
from bot.models import (
    DefinitionReview,
    Installation,
    Lead,
    LeadDefinition,
    LeadRating,
    LeadStatus,
)
from bot.services import definition as definition_svc
from tests.harness import tick
from tests.test_home import home_of, open_home
from tests.test_loop_scenario import all_text, channel_posts, dms_to, stored

# 2027-01-01 is a Friday: the 2026-Q4 review is due at 09:00 UTC (DIGEST_TIME's default).
REVIEW_DUE = datetime(2027, 1, 1, 9, 0, tzinfo=UTC)
OWNERS = ("UMIA", "UBEN")


@pytest.fixture
def settings_overrides():
    return {
        "ADMIN_USERS": "UMGR,UMIA",  # UMIA owns the definition and edits it; UBEN owns it only
        "DEFINITION_OWNERS": ",".join(OWNERS),
        "LEAD_SALES_CHANNEL": "CMGR",
        "WINLOSS_CHANNEL": "CWINLOSS",
        "OUTBOX_WORKERS": "1",
    }


def open_editor(h, user_id):
    reply = h.command(user_id, "definition edit")
    assert reply.status == 200
    return h.slack.calls_to("views.open")[-1].params["view"]


def typed(view, **changes):
    """The editor's values as Slack sends them back: the initial ones, ``changes`` over them."""
    values = {}
    for block in view["blocks"]:
        if block.get("type") == "input":
            values[block["block_id"]] = block["element"].get("initial_value")
    values.update(changes)
    return values


def versions(h):
    with session_scope(h.rt.session_factory) as s:
        return [
            (d.version, d.author, d.note)
            for d in s.scalars(select(LeadDefinition).order_by(LeadDefinition.version))
        ]


def hand_lead_and_rate(h, *, person, rating=LeadStatus.REJECTED, reason="Bad data", at=None):
    """A lead rated as the lead loop records it: with the version current() says."""
    at = at or h.clock()
    with session_scope(h.rt.session_factory) as s:
        version = definition_svc.current(s)
        number = version.version if version is not None else None
        lead = Lead(
            origin="hook",
            person=person,
            source="Webinar",
            handed_at=at,
            sla_due_at=at + timedelta(hours=24),
            status=rating,
            definition_version=number,
        )
        s.add(lead)
        s.flush()
        s.add(
            LeadRating(
                lead_id=lead.id,
                rating=rating,
                reason=reason if rating == LeadStatus.REJECTED else None,
                rated_by="UANA",
                rated_at=at,
                definition_version=number,
            )
        )


def test_edited_twice_three_versions_and_ratings_tied_to_theirs(harness):
    h, slack = harness, harness.slack

    # Anyone reads it: nothing yet, and how to write it.
    reply = h.command("UOUT", "definition")
    assert "No definition of a qualified lead has been written yet" in reply.body
    assert "/closeloop definition edit" in reply.body

    # A non-admin, non-owner is refused before any modal opens; nothing is stored or sent.
    reply = h.command("UOUT", "definition edit")
    assert "Only Closeloop admins" in reply.body
    assert slack.calls_to("views.open") == []

    # The admin writes version 1; a missing note is an inline error, nothing saved.
    view = open_editor(h, "UMGR")
    assert view["callback_id"] == "definition_submit" and len(view["blocks"]) <= 100
    values = {
        "summary": "A company we can help, with someone who can buy. <!channel>",
        "mql": "Fits the ICP and requested a demo.",
        "disqualifiers": "Students & competitors.",
        "note": "",
    }
    reply = h.submit("UMGR", view, values)
    assert reply.json()["response_action"] == "errors" and "note" in reply.json()["errors"]
    assert versions(h) == []
    reply = h.submit("UMGR", view, {**values, "note": "First version, agreed on Monday"})
    assert reply.status == 200 and reply.body == ""
    assert versions(h) == [(1, "UMGR", "First version, agreed on Monday")]
    hand_lead_and_rate(h, person="Lead under v1")

    # Both channels are told, once, with the note; user text is escaped.
    for channel in ("CMGR", "CMKTG"):
        (post,) = channel_posts(slack, channel)
        text = all_text(post.params)
        assert "version 1" in text and "First version, agreed on Monday" in text
        assert "/closeloop definition" in text and "<!channel>" not in text

    # Edited: the editor opens with version 1 in it; saving it unchanged is refused inline.
    view = open_editor(h, "UMGR")
    assert typed(view)["mql"] == "Fits the ICP and requested a demo."
    reply = h.submit("UMGR", view, typed(view, note="no change really"))
    assert "Nothing changed" in reply.json()["errors"]["note"]
    reply = h.submit(
        "UMGR", view, typed(view, authority="Director or above", note="Authority level added")
    )
    assert reply.body == ""
    hand_lead_and_rate(h, person="Lead under v2", rating=LeadStatus.ACCEPTED)

    # An owner edits it too (owners may), the third version.
    view = open_editor(h, "UMIA")
    stale = open_editor(h, "UMGR")  # opened on version 2 as well
    reply = h.submit("UMIA", view, typed(view, sales_ready="Asked for a call", note="Sales-ready"))
    assert reply.body == ""
    hand_lead_and_rate(h, person="Lead under v3")
    assert versions(h) == [
        (1, "UMGR", "First version, agreed on Monday"),
        (2, "UMGR", "Authority level added"),
        (3, "UMIA", "Sales-ready"),
    ]
    # The admin's editor still holds version 2: saving it would undo version 3, so it is refused.
    reply = h.submit("UMGR", stale, typed(stale, note="mine"))
    assert "Version 3 was saved while you were editing version 2" in reply.json()["errors"]["note"]
    assert len(versions(h)) == 3

    # A forged submission from someone who may not edit is refused, nothing stored.
    reply = h.submit("UOUT", view, typed(view, summary="Anything goes", note="hijack"))
    assert "Only Closeloop admins" in reply.json()["errors"]["note"]
    assert len(versions(h)) == 3

    # Every rating records the version it was made under.
    with session_scope(h.rt.session_factory) as s:
        rows = s.execute(
            select(Lead.person, LeadRating.definition_version)
            .join(LeadRating, LeadRating.lead_id == Lead.id)
            .order_by(Lead.id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("Lead under v1", 1),
        ("Lead under v2", 2),
        ("Lead under v3", 3),
    ]

    # Each version told to each channel once.
    assert [len(channel_posts(slack, c)) for c in ("CMGR", "CMKTG")] == [3, 3]

    # Anyone sees the version in force, its author and date; history lists all three.
    reply = h.command("UANA", "definition")
    body = reply.json()
    assert "Qualified lead: version 3" in json.dumps(body["blocks"])
    assert "<@UMIA>" in json.dumps(body["blocks"]) and "Asked for a call" in json.dumps(body)
    assert "&lt;!channel&gt;" in json.dumps(body["blocks"])
    history = json.dumps(h.command("UANA", "definition history").json())
    assert all(f"Version {v}" in history for v in (1, 2, 3))
    older = json.dumps(h.command("UANA", "definition 1").json())
    assert "version 1" in older and "3 is in force" in older
    assert "no version 7" in h.command("UANA", "definition 7").body
    assert "/closeloop definition history" in h.command("UANA", "definition help").body


def test_the_review_dm_once_per_owner_per_quarter(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    # A definition, and the quarter's leads: three rejected, one accepted.
    clock.set(datetime(2026, 11, 2, 10, 0, tzinfo=UTC))
    view = open_editor(h, "UMGR")
    h.submit("UMGR", view, {"summary": "Qualified", "mql": "ICP + action", "note": "v1"})
    for i in range(3):
        hand_lead_and_rate(h, person=f"R{i}", reason="Bad fit: no budget")
    hand_lead_and_rate(h, person="A", rating=LeadStatus.ACCEPTED)

    # Before it is due: nothing.
    clock.set(REVIEW_DUE - timedelta(minutes=1))
    tick(h.rt)
    assert all(dms_to(slack, owner) == [] for owner in OWNERS)

    clock.set(REVIEW_DUE)
    tick(h.rt)
    for owner in OWNERS:
        (dm,) = dms_to(slack, owner)
        text = all_text(dm.params)
        assert "2026-Q4" in text and "*4* lead(s) handed to sales" in text
        assert "Bad fit: no budget: 3" in text
        assert "definition_still_right" in text and "definition_edit" in text
    # Again, and from two other processes at once: still one DM each.
    clock.advance(minutes=5)
    tick(h.rt)
    h.tick_together(2)
    assert [len(dms_to(slack, owner)) for owner in OWNERS] == [1, 1]
    assert dms_to(slack, "UMGR") == []  # an admin is not an owner: not asked

    # Someone who is neither owner nor admin clicks: refused, told privately, nothing recorded.
    mia_dm = dms_to(slack, "UMIA")[0]
    h.click_button(
        "UOUT", stored(slack, mia_dm), mia_dm.response["channel"], "definition_still_right"
    )
    (refusal,) = dms_to(slack, "UOUT")
    assert "Only the definition's owners" in all_text(refusal.params)
    with session_scope(h.rt.session_factory) as s:
        review = s.scalar(select(DefinitionReview))
        assert review.period == "2026-Q4" and review.reviewed_at is None

    # Edit: an owner who is not an admin is told to ask one (only admins edit it) ...
    ben_dm = dms_to(slack, "UBEN")[0]
    before = len(slack.calls_to("views.open"))
    h.click_button("UBEN", stored(slack, ben_dm), ben_dm.response["channel"], "definition_edit")
    assert len(slack.calls_to("views.open")) == before
    assert "Only Closeloop admins" in all_text(dms_to(slack, "UBEN")[-1].params)
    # ... and opens the editor for an owner who is an admin.
    h.click_button("UMIA", stored(slack, mia_dm), mia_dm.response["channel"], "definition_edit")
    opened = slack.calls_to("views.open")
    assert len(opened) == before + 1
    assert opened[-1].params["view"]["callback_id"] == "definition_submit"
    assert typed(opened[-1].params["view"])["mql"] == "ICP + action"

    # Still right, by an owner: recorded; both owners' DMs stop offering the buttons.
    h.click_button(
        "UMIA", stored(slack, mia_dm), mia_dm.response["channel"], "definition_still_right"
    )
    with session_scope(h.rt.session_factory) as s:
        review = s.scalar(select(DefinitionReview))
        assert (review.outcome, review.reviewed_by) == ("still_right", "UMIA")
        assert review.reviewed_at == REVIEW_DUE + timedelta(minutes=5)
    tick(h.rt)
    for dm in (mia_dm, ben_dm):
        now_shown = all_text(stored(slack, dm))
        assert "Reviewed for 2026-Q4: still right, by <@UMIA>" in now_shown
        assert "definition_still_right" not in now_shown
    # A second answer (a click still in flight) does not overwrite the first.
    channel = ben_dm.response["channel"]
    h.click("UBEN", "definition_still_right", "2026-Q4", channel=channel, message_ts="1.2")
    with session_scope(h.rt.session_factory) as s:
        assert s.scalar(select(DefinitionReview.reviewed_by)) == "UMIA"

    # Later in the quarter: no new DM.
    clock.set(REVIEW_DUE + timedelta(days=40))
    tick(h.rt)
    reviews = [
        [c for c in dms_to(slack, owner) if "Only Closeloop admins" not in all_text(c.params)]
        for owner in OWNERS
    ]
    assert [len(dms) for dms in reviews] == [1, 1]


@pytest.fixture
def impatient(harness):
    """The harness with a short client timeout and short waits between the client's retries
    (as the suite's Slack fault tests set them)."""
    for client in (harness.rt.client, harness.rt.outbox.client):
        client.timeout = 1.5
        for handler in client.retry_handlers:
            if hasattr(handler, "interval_calculator"):
                handler.interval_calculator = FixedValueRetryIntervalCalculator(0.05)
    return harness


# The faults the suite injects (tests/test_faults_slack.py): Slack's 500, a dropped
# connection, a rate limit, an answer that comes after the client gave up (posted, unknown).
@pytest.mark.parametrize(
    "fault",
    [{"status": 500}, {"drop": True}, {"error": "ratelimited", "retry_after": 1}, {"delay": 2.2}],
    ids=["server_error", "dropped", "ratelimited", "slow"],
)
def test_the_review_dm_is_sent_once_when_slack_fails_once(impatient, fault):
    h, slack, clock = impatient, impatient.slack, impatient.clock
    clock.set(REVIEW_DUE)
    slack.fail_next("chat.postMessage", **fault)
    tick(h.rt)
    for minutes in (1, 2, 3):
        clock.set(REVIEW_DUE + timedelta(minutes=minutes))
        tick(h.rt)
        tick(h.another_process())
    delivered = [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.params["channel"] in {o for u in OWNERS for o in (u, slack.dm_channel_id(u))}
    ]
    assert sorted(c.params["channel"] for c in delivered) == sorted(OWNERS)
    # no definition yet: the DM asks for one (Edit only)
    text = all_text(delivered[0].params)
    assert "no definition yet" in text and "definition_still_right" not in text


def test_nothing_whose_time_passed_before_installation_is_sent(harness):
    h, slack, clock = harness, harness.slack, harness.clock
    with session_scope(h.rt.session_factory) as s:
        s.execute(delete(Installation))
    clock.set(REVIEW_DUE + timedelta(hours=3))  # installed after 2026-Q4 ended
    tick(h.rt)
    tick(h.rt)
    assert all(dms_to(slack, owner) == [] for owner in OWNERS)
    with session_scope(h.rt.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(DefinitionReview)) == 0


def test_the_admins_home_tab_warns_of_a_definition_not_reviewed(harness):
    h, clock = harness, harness.clock
    open_home(h, "UMGR")
    assert "No definition of a qualified lead yet" in home_of(h.slack, "UMGR")
    clock.set(datetime(2026, 5, 4, 10, 0, tzinfo=UTC))
    view = open_editor(h, "UMGR")
    h.submit("UMGR", view, {"summary": "Qualified", "note": "v1"})
    open_home(h, "UMGR")
    home = home_of(h.slack, "UMGR")
    assert "No definition" not in home and "not been reviewed" not in home

    clock.set(datetime(2026, 11, 18, 12, 0, tzinfo=UTC))  # six months and more later
    open_home(h, "UMGR")
    assert "(version 1) has not been reviewed for two review periods" in home_of(h.slack, "UMGR")
    open_home(h, "UBEN")  # an owner, not an admin: no admin warning
    assert "not been reviewed" not in home_of(h.slack, "UBEN")

    # An edit counts as a review, and refreshes the admin's Home tab.
    view = open_editor(h, "UMIA")
    h.submit("UMIA", view, typed(view, mql="ICP + demo", note="Reviewed: MQL sharpened"))
    assert "not been reviewed" not in home_of(h.slack, "UMGR")
