"""Every forbidden action, tried end to end with signed requests against the running app.

The three rules are enforced in the services, whatever the UI shows:

* only marketing acknowledges a post (services.loop.check_marketing);
* only a deal's owner or a sales manager logs or edits its entry
  (services.winloss.check_may_log, entry_for_edit);
* only admins (ADMIN_USERS) run admin actions from Slack (services.access.require_admin).

For each forbidden try we assert what the person sees, and that nothing was stored (every
table compared row by row) and nothing was sent beyond that explanation.

Already covered elsewhere, not repeated here:

* a non-marketing reaction on a feedback post, and an outsider's Close the loop click in the
  channel: tests/test_loop_scenario.py::test_full_weekly_loop_two_time_zones;
* an outsider's Close the loop click in the Home tab:
  tests/test_home.py::test_close_the_loop_from_the_home_tab_by_an_outsider_is_explained_privately;
* an outsider clicking Edit on a win/loss post:
  tests/test_winloss_scenario.py::test_webhook_to_dm_modal_post_ack_and_edit;
* an outsider clicking Log win/loss on an escalation:
  tests/test_winloss_scenario.py::test_a_manager_logs_an_overdue_deal_from_the_escalation;
* a forged first-entry submission by an outsider:
  tests/test_winloss_scenario.py::test_modal_refuses_bad_input_inline_and_stores_nothing;
* the service rules as plain functions: tests/test_feedback_service.py::test_acknowledgements,
  tests/test_winloss_service.py::test_only_owner_or_manager_logs_a_deal and
  test_editing_keeps_the_previous_text_and_stops_after_seven_days.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.db import session_scope
from bot.listeners import admin_command
from bot.models import (
    Acknowledgement,
    Base,
    Competitor,
    Digest,
    OutboxKind,
    OutboxMessage,
    Prompt,
    WinLossEntry,
)
from bot.services import competitors as competitor_svc
from bot.services.access import require_admin
from bot.services.errors import NotAllowed
from tests.harness import tick
from tests.test_loop_scenario import FRI_1500_UTC, all_text, channel_posts, dms_to, stored
from tests.test_winloss_scenario import (
    CLOSED,
    QUOTE,
    SECRET,
    deal,
    fill,
    nudges_to,
    posts_in,
    submit_winloss,
)

ADMIN = "UADM"
# What changes something in Slack (reads such as users.info are not "sending").
WRITES = (
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "views.open",
    "views.push",
    "views.update",
    "views.publish",
    "reactions.add",
    "files.getUploadURLExternal",
    "files.completeUploadExternal",
    "upload",
    "response_url",
)


@pytest.fixture
def settings_overrides():
    return {
        "WINLOSS_CHANNEL": "CWINLOSS",
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "DEALS_WEBHOOK_SECRET": SECRET,
        "SALES_MANAGERS": "UMGR",
        "ADMIN_USERS": ADMIN,
    }


@pytest.fixture
def h(harness):
    harness.slack.add_user(ADMIN, tz="Europe/Paris", name="admin")
    return harness


def database(h) -> dict[str, list[str]]:
    """Every row of every table, as text: equal snapshots mean nothing was stored."""
    with session_scope(h.rt.session_factory) as s:
        return {
            table.name: sorted(repr(tuple(row)) for row in s.execute(select(table)))
            for table in Base.metadata.sorted_tables
        }


def writes(slack, since: int = 0) -> list[tuple[str, dict]]:
    return [(c.method, c.params) for c in slack.calls[since:] if c.method in WRITES]


def said(reply) -> str:
    """The ephemeral answer in a command's HTTP response (Bolt sends bare text as text)."""
    return reply.json()["text"] if reply.body.startswith("{") else reply.body


def only_told(new: list[tuple[str, dict]], user_id: str, words: str) -> None:
    """The only thing sent is one explanation to ``user_id`` (ephemeral or DM)."""
    assert len(new) == 1, new
    method, params = new[0]
    assert method in ("chat.postMessage", "chat.postEphemeral"), new
    if method == "chat.postMessage":
        assert params["channel"] in (user_id,), params  # a DM, never a channel
    else:
        assert params["user"] == user_id
    assert words in params["text"], params["text"]


def stored_only_the_explanation(h, before: dict[str, list[str]], user_id: str, words: str) -> None:
    """Nothing was stored since ``before`` but the explanation DMed to ``user_id``: like every
    message Closeloop sends, it went through the outbox (one new notice row, nothing else)."""
    after = database(h)
    assert {k: v for k, v in after.items() if k != "outbox"} == {
        k: v for k, v in before.items() if k != "outbox"
    }
    assert set(before["outbox"]) <= set(after["outbox"])  # the rows there are unchanged
    assert len(after["outbox"]) == len(before["outbox"]) + 1
    with session_scope(h.rt.session_factory) as s:
        told = s.scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc())).first()
        assert (told.kind, told.channel) == (OutboxKind.NOTICE, user_id)
        assert words in told.text


# --- only marketing acknowledges --------------------------------------------------------


def feedback_post_and_note_modal(h):
    """Ana's answer in marketing's channel, and the note modal Mia (marketing) opened."""
    h.clock.set(FRI_1500_UTC)
    tick(h.rt)
    h.dm("UANA", "- ROI opener\n- Security deck\n- Budgets move to Q3")
    (post,) = channel_posts(h.slack, threaded=False)
    h.click_button("UMIA", stored(h.slack, post), "CMKTG", "loop_close")
    modal = h.slack.calls_to("views.open")[-1].params["view"]
    return post, modal


@pytest.mark.parametrize("who", ["UOUT", "UANA", "UMGR"])  # outsider, the author, a manager
def test_a_forged_close_the_loop_submission_from_outside_marketing_stores_nothing(h, who):
    post, modal = feedback_post_and_note_modal(h)
    before, mark = database(h), len(h.slack.calls)
    reply = h.submit(who, modal, {"note": "We will change everything <!channel>"})
    # Refused before Slack is answered: the modal stays open and says why; nothing is sent.
    assert reply.status == 200 and reply.json()["response_action"] == "errors"
    assert "Only the marketing team" in reply.json()["errors"]["note"]
    assert writes(h.slack, mark) == []
    assert database(h) == before
    assert "Loop closed" not in all_text(stored(h.slack, post))


def test_a_reaction_on_a_winloss_post_from_outside_marketing_stores_nothing(h):
    entry_post = logged_entry(h)
    before, mark = database(h), len(h.slack.calls)
    for who in ("UANA", "UMGR", "UOUT"):  # the owner, a manager, an outsider
        h.react(who, "CWINLOSS", entry_post.response["ts"], "white_check_mark")
    # A reaction is public and has no reply channel: nothing is said, nothing is done.
    assert writes(h.slack, mark) == []
    processed = {"inbound_events"}  # each delivery is remembered, by event_id
    after = database(h)
    assert {k: v for k, v in after.items() if k not in processed} == {
        k: v for k, v in before.items() if k not in processed
    }
    with session_scope(h.rt.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Acknowledgement)) == 0


# --- only the owner or a sales manager logs or edits ------------------------------------


def logged_entry(h):
    """Ana's CRM deal, logged by Ana; returns the win/loss channel post."""
    h.clock.set(CLOSED + timedelta(hours=1))
    assert h.deal_closed(deal()).status == 201
    (nudge,) = nudges_to(h.slack, "UANA")
    h.click_button("UANA", stored(h.slack, nudge), nudge.response["channel"], "winloss_open")
    modal = h.slack.calls_to("views.open")[-1].params["view"]
    submit_winloss(
        h,
        "UANA",
        modal,
        fill(modal, reason=QUOTE, reason_category="Price", insight="Lead with ROI"),
    )
    (post,) = posts_in(h.slack, "CWINLOSS")
    return post


def test_a_fellow_rep_cannot_log_someone_elses_deal(h):
    h.clock.set(CLOSED + timedelta(hours=1))
    h.deal_closed(deal())  # Ana's deal
    (nudge,) = nudges_to(h.slack, "UANA")
    deal_pk = next(
        e["value"]
        for b in stored(h.slack, nudge)["blocks"]
        for e in b.get("elements") or []
        if e.get("action_id") == "winloss_open"
    )
    before, mark = database(h), len(h.slack.calls)
    # Ben forges Ana's button from his own DM with the bot.
    h.click("UBEN", "winloss_open", deal_pk, channel="DBEN", message_ts=nudge.response["ts"])
    only_told(writes(h.slack, mark), "UBEN", "Only the deal's owner or a sales manager")
    stored_only_the_explanation(h, before, "UBEN", "Only the deal's owner or a sales manager")


def test_a_forged_edit_by_someone_else_changes_nothing(h):
    post = logged_entry(h)
    h.click_button("UANA", stored(h.slack, post), "CWINLOSS", "winloss_edit")
    edit_modal = h.slack.calls_to("views.open")[-1].params["view"]
    changed = fill(edit_modal, reason="They told us the price doubled at renewal time, sadly")
    before, mark = database(h), len(h.slack.calls)
    for who in ("UBEN", "UOUT", "UMIA"):  # a fellow rep, an outsider, marketing
        reply = submit_winloss(h, who, edit_modal, changed).json()
        assert reply["response_action"] == "errors"
        assert "owner or a sales manager" in reply["errors"]["reason"]
    assert writes(h.slack, mark) == []  # the refusal is shown inline in the modal
    assert database(h) == before
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(WinLossEntry.reason)).one() == QUOTE


def test_the_manager_may_edit_any_entry(h):
    post = logged_entry(h)
    h.click_button("UMGR", stored(h.slack, post), "CWINLOSS", "winloss_edit")
    edit_modal = h.slack.calls_to("views.open")[-1].params["view"]
    new_reason = "Their CFO said the renewal price doubled and they could not justify it"
    reply = submit_winloss(h, "UMGR", edit_modal, fill(edit_modal, reason=new_reason))
    assert reply.body == ""
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(WinLossEntry.reason)).one() == new_reason


# --- only admins run admin actions ------------------------------------------------------

ADMIN_ACTIONS = [
    "",
    "help",
    "prompt-now",
    "prompt-now <@UANA|ana> <@UBEN>",
    "digest",
    "digest 2026-10",
    "merge-competitor Initech Corp into Initech",
    "no-such-thing",
]


def competitors(h, *names):
    with session_scope(h.rt.session_factory) as s:
        for name in names:
            competitor_svc.get_or_create(s, name)


@pytest.mark.parametrize("who", ["UOUT", "UMGR", "UMIA", "UANA"])
def test_non_admins_run_no_admin_action(h, who):
    competitors(h, "Initech Corp", "Initech")
    for action in ADMIN_ACTIONS:
        before, mark = database(h), len(h.slack.calls)
        reply = h.command(who, f"admin {action}".strip())
        assert reply.status == 200
        assert "Only Closeloop admins (ADMIN_USERS)" in said(reply), action
        assert "nothing was done" in said(reply)
        assert writes(h.slack, mark) == [], action
        assert database(h) == before, action


@pytest.mark.parametrize("settings_overrides", [{"ADMIN_USERS": ""}])
def test_without_admin_users_nobody_runs_admin_actions_from_slack(h):
    for who in (ADMIN, "UMGR"):
        before, mark = database(h), len(h.slack.calls)
        reply = h.command(who, "admin prompt-now")
        assert "switched off" in said(reply)
        assert "closeloop command" in said(reply)
        assert writes(h.slack, mark) == [] and database(h) == before


def test_the_check_is_in_the_flows_the_listener_calls_not_only_in_the_listener(h):
    competitors(h, "Initech Corp", "Initech")
    before, mark = database(h), len(h.slack.calls)
    for call in (
        lambda: admin_command.prompt_now(h.rt, user_id="UOUT", users=None),
        lambda: admin_command.post_digest(h.rt, user_id="UMGR", month=None),
        lambda: admin_command.merge_competitors(
            h.rt, user_id="UANA", source="Initech Corp", target="Initech"
        ),
    ):
        with pytest.raises(NotAllowed):
            call()
    with pytest.raises(NotAllowed):
        require_admin((), ADMIN)  # an empty list admits nobody
    require_admin(h.settings, ADMIN)
    assert writes(h.slack, mark) == [] and database(h) == before


# --- admins can ---------------------------------------------------------------------------


def responses(slack, since: int = 0) -> list[dict]:
    return [c.params for c in slack.calls[since:] if c.method == "response_url"]


def test_admin_help_lists_every_action(h):
    for text in ("admin", "admin help", "ADMIN  Help"):
        body = said(h.command(ADMIN, text))
        for action in ("prompt-now", "digest", "merge-competitor"):
            assert action in body
    assert "/closeloop admin" in said(h.command("UANA", "help"))
    unknown = said(h.command(ADMIN, "admin <!channel>"))
    assert "&lt;!channel&gt;" in unknown and "<!channel>" not in unknown


def test_admin_prompt_now_for_named_reps_then_everyone(h):
    slack = h.slack
    mark = len(slack.calls)
    reply = h.command(ADMIN, "admin prompt-now <@UANA|ana>, <@UOUT>")
    assert "Sending this week's prompt" in said(reply)  # the ack, at once
    (answer,) = responses(slack, mark)
    assert answer["response_type"] == "ephemeral"
    assert "Queued for <@UANA>" in answer["text"]
    assert "Not in the sales team" in answer["text"] and "<@UOUT>" in answer["text"]
    assert dms_to(slack, "UANA") == []  # queued: the scheduler role's outbox job sends it
    h.rt.outbox.drain()
    assert len(dms_to(slack, "UANA")) == 1 and dms_to(slack, "UBEN") == []
    assert dms_to(slack, "UOUT") == []

    mark = len(slack.calls)
    h.command(ADMIN, "admin prompt-now")
    (answer,) = responses(slack, mark)
    assert "Queued for <@UBEN>" in answer["text"]
    assert "Already had this week's prompt: <@UANA>" in answer["text"]
    h.rt.outbox.drain()
    assert len(dms_to(slack, "UANA")) == 1 and len(dms_to(slack, "UBEN")) == 1
    with session_scope(h.rt.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Prompt)) == 2


def test_admin_prompt_now_refuses_names_it_cannot_resolve(h):
    before, mark = database(h), len(h.slack.calls)
    text = said(h.command(ADMIN, "admin prompt-now @ana <b>bold</b>"))
    assert "I could not tell who" in text and "`@ana`" in text
    assert "<b>" not in text and "&lt;b&gt;" in text
    assert writes(h.slack, mark) == [] and database(h) == before


def test_admin_posts_a_digest_once(h):
    slack = h.slack
    mark = len(slack.calls)
    assert "Posting the digest" in said(h.command(ADMIN, "admin digest 2026-10"))
    (answer,) = responses(slack, mark)
    assert "Posted the 2026-10 digest to <#CDIGEST>" in answer["text"]
    posts = [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] == "CDIGEST"]
    assert len(posts) == 1 and len(slack.files) == 1

    mark = len(slack.calls)
    h.command(ADMIN, "admin digest")  # the default month is last month: October again
    (answer,) = responses(slack, mark)
    assert "already in <#CDIGEST>" in answer["text"]
    posts = [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] == "CDIGEST"]
    assert len(posts) == 1
    with session_scope(h.rt.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Digest)) == 1

    before, mark = database(h), len(slack.calls)
    text = said(h.command(ADMIN, "admin digest 2026-13 &lt;!here&gt;"))
    assert "is not a month like 2026-10" in text and "<!here>" not in text
    assert writes(slack, mark) == [] and database(h) == before


def test_admin_merges_competitors_and_names_are_escaped(h):
    competitors(h, "Initech Corp", "Initech", "AT&T")
    slack = h.slack
    mark = len(slack.calls)
    h.command(ADMIN, 'admin merge-competitor "Initech Corp" into Initech')
    (answer,) = responses(slack, mark)
    assert "Merged *Initech Corp* into *Initech*" in answer["text"]
    with session_scope(h.rt.session_factory) as s:
        assert competitor_svc.find(s, "initech corp").name == "Initech"

    mark = len(slack.calls)
    h.command(ADMIN, "admin merge-competitor AT&amp;T into Initech")  # Slack escapes & < >
    (answer,) = responses(slack, mark)
    assert "Merged *AT&amp;T* into *Initech*" in answer["text"]

    before, mark = database(h), len(slack.calls)
    h.command(ADMIN, "admin merge-competitor &lt;!channel&gt; into Initech")
    (answer,) = responses(slack, mark)
    assert "No competitor called" in answer["text"]
    assert "&lt;!channel&gt;" in answer["text"] and "<!channel>" not in answer["text"]
    assert database(h) == before
    text = said(h.command(ADMIN, "admin merge-competitor Initech"))
    assert "as `A into B`" in text and database(h) == before
    with session_scope(h.rt.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Competitor)) == 3
    assert json.dumps(writes(slack, mark)).count("response_url") == 1
