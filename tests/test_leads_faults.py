"""The lead loop's messages under the faults the suite injects on Slack (tests/
test_faults_slack.py): the owner's DM and the managers' escalation reach Slack exactly once,
whether Slack paced us, failed, dropped the connection or answered too late; and a rating
made after a lost answer still edits the one DM."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.models import Lead
from tests.harness import tick
from tests.test_faults_slack import (
    ALL,
    EVERY_TRY,
    check_the_fault_happened,
    delivered,
    inject,
    retry_by_tick,
    statuses,
    wait_out_retry_after,
)
from tests.test_faults_slack import h as h  # noqa: F401 (the fixture)
from tests.test_leads_scenario import HANDED, hand_over


@pytest.fixture
def settings_overrides():
    return {"WINLOSS_ESCALATION_CHANNEL": "CMGR", "SALES_MANAGERS": "UMGR", "OUTBOX_WORKERS": "1"}


def nudge_ts(h) -> str | None:
    with session_scope(h.rt.session_factory) as s:
        return s.scalars(select(Lead.nudge_ts)).one()


@pytest.mark.parametrize("fault", ALL)
def test_the_owners_dm_once_whatever_slack_does(h, fault):
    slack = h.slack
    inject(slack, fault)
    hand_over(h)
    check_the_fault_happened(slack, fault, "UANA")  # posted to the user; Slack opens the DM
    if fault == "ratelimited":
        wait_out_retry_after(h, "UANA")
    else:
        retry_by_tick(h)
    assert statuses(slack, "UANA") == EVERY_TRY[fault]
    assert len(delivered(slack, "UANA")) == 1
    dm = slack.dm_channel_id("UANA")
    (message,) = slack.messages.get(dm, {}).values()  # one DM in Slack
    assert nudge_ts(h) == message["ts"]  # found again when the answer was lost
    h.click_button("UANA", message, dm, "lead_accept")
    edits = slack.calls_to("chat.update")
    assert len(edits) == 1 and edits[0].params["ts"] == message["ts"]


@pytest.mark.parametrize("fault", ALL)
def test_the_escalation_once_whatever_slack_does(h, fault):
    slack, clock = h.slack, h.clock
    hand_over(h)
    clock.set(HANDED + timedelta(hours=18))
    tick(h.rt)  # the reminder
    clock.set(HANDED + timedelta(hours=24))
    inject(slack, fault)
    tick(h.rt)
    check_the_fault_happened(slack, fault, "CMGR")
    if fault == "ratelimited":
        wait_out_retry_after(h, "CMGR")
    else:
        retry_by_tick(h)
    assert statuses(slack, "CMGR") == EVERY_TRY[fault]
    assert len(slack.messages.get("CMGR", {})) == 1
