"""``closeloop forget-user``: a realistic month for two reps and a marketer, built through the
running app; one rep is forgotten with the real command, the other is untouched, and the
month's digest figures are the same before and after."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.models import (
    FORGOTTEN_PREFIX,
    Acknowledgement,
    Base,
    Deal,
    FeedbackAnswer,
    InboundEvent,
    LoopPost,
    Member,
    OutboxMessage,
    OutboxState,
    Prompt,
    WinLossEntry,
    WinLossRevision,
)
from bot.services import privacy
from tests.conftest import closeloop
from tests.harness import sample, tick
from tests.test_loop_scenario import FRI_1500_UTC, SAT_0000_UTC, channel_posts, dms_to, stored
from tests.test_winloss_scenario import SECRET, deal, fill, nudges_to, posts_in, submit_winloss

# What Ana (the rep who leaves) wrote or is known by; none of it may survive.
ANA_TEXT = (
    "Ana's ROI calculator opener",
    "Ana's security deck objection",
    "Ana's insight: budgets move to Q3",
    "Ana's webinar campaign",
)
ANA_QUOTE = "Their CTO told us the integration would take a full quarter of engineering"
ANA_QUOTE_EDITED = "Their CTO told us the integration would take two quarters of engineering work"
BEN_TEXT = ("Ben's case study with numbers", "Ben's pricing page objection")
BEN_QUOTE = "Their CFO said the live ROI calculator made the decision easy for her team"
MIA_NOTE = "Pausing the security deck; thanks <@UANA> (ana@example.com) for flagging it"


@pytest.fixture
def settings_overrides():
    return {
        "WINLOSS_CHANNEL": "CWINLOSS",
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "DEALS_WEBHOOK_SECRET": SECRET,
        "SALES_MANAGERS": "UMGR",
    }


@pytest.fixture
def env(harness, cli_env, settings_overrides):
    """The operator's environment for the same database and Slack as the harness."""
    e = {**cli_env, **settings_overrides, "MARKETING_USERGROUP": "SMKTG"}
    e.pop("MARKETING_USERS")
    return e


def log_entry(h, user_id, nudge, **values):
    h.click_button(user_id, stored(h.slack, nudge), nudge.response["channel"], "winloss_open")
    modal = h.slack.calls_to("views.open")[-1].params["view"]
    reply = submit_winloss(h, user_id, modal, fill(modal, **values))
    assert reply.body == "", reply.body


def build_history(h) -> dict:
    """Two weeks of feedback, acknowledgements and three deals in November 2026."""
    slack, clock = h.slack, h.clock
    # Week of Nov 16: both reps prompted in their own time zones.
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    clock.set(SAT_0000_UTC)
    tick(h.rt)
    (prompt,) = dms_to(slack, "UANA")
    h.click_button("UANA", stored(slack, prompt), prompt.response["channel"], "feedback_open")
    modal = slack.calls_to("views.open")[-1].params["view"]
    h.submit(
        "UANA",
        modal,
        dict(zip(("worked", "fell_flat", "insight", "campaign"), ANA_TEXT, strict=True)),
    )
    h.dm("UBEN", f"- {BEN_TEXT[0]}\n- {BEN_TEXT[1]}\n- Same objection as <@UANA> heard")
    ana_post, ben_post = channel_posts(slack, threaded=False)
    # Mia closes the loop: by reaction on Ana's post, with a note on Ben's.
    h.react("UMIA", "CMKTG", ana_post.response["ts"], "white_check_mark")
    h.click_button("UMIA", stored(slack, ben_post), "CMKTG", "loop_close")
    h.submit("UMIA", slack.calls_to("views.open")[-1].params["view"], {"note": MIA_NOTE})

    # Deals: Ana's logged (then edited), Ben's logged, Ana's second one still waiting.
    clock.set(datetime(2026, 11, 23, 14, 0, tzinfo=UTC))
    h.deal_closed(deal(deal_id="CRM-1", name="Acme renewal", closed_at="2026-11-23T13:00:00Z"))
    h.deal_closed(
        deal(
            deal_id="CRM-2",
            name="Globex pilot",
            outcome="won",
            owner_email="ben@example.com",
            closed_at="2026-11-23T13:00:00Z",
        )
    )
    (ana_nudge,) = nudges_to(slack, "UANA")
    (ben_nudge,) = nudges_to(slack, "UBEN")
    log_entry(
        h,
        "UANA",
        ana_nudge,
        reason=ANA_QUOTE,
        reason_category="Implementation / time to value",
        competitor_new="Initech",
        insight="Lead with the integration kit",
    )
    log_entry(
        h,
        "UBEN",
        ben_nudge,
        reason=BEN_QUOTE,
        reason_category="Other",
        insight="Demo the ROI calculator first",
    )
    (ana_entry_post,) = [
        p for p in posts_in(slack, "CWINLOSS") if "Acme renewal" in json.dumps(p.params)
    ]
    h.click_button("UANA", stored(slack, ana_entry_post), "CWINLOSS", "winloss_edit")
    edit = slack.calls_to("views.open")[-1].params["view"]
    submit_winloss(h, "UANA", edit, fill(edit, reason=ANA_QUOTE_EDITED))
    h.react("UMIA", "CWINLOSS", ana_entry_post.response["ts"], "white_check_mark")
    h.deal_closed(
        deal(deal_id="CRM-3", name="Umbrella expansion", closed_at="2026-11-23T12:00:00Z")
    )

    # Week of Nov 23: Ana says she is out, Ben never answers (missed when the next goes out).
    clock.set(datetime(2026, 11, 27, 15, 0, tzinfo=UTC))
    tick(h.rt)
    clock.set(datetime(2026, 11, 28, 0, 0, tzinfo=UTC))
    tick(h.rt)
    week2 = dms_to(slack, "UANA")[-1]
    h.click_button("UANA", stored(slack, week2), week2.response["channel"], "feedback_skip_out")
    clock.set(datetime(2026, 12, 5, 12, 0, tzinfo=UTC))
    tick(h.rt)
    return {"ana_post": ana_post, "ben_post": ben_post, "ana_entry_post": ana_entry_post}


def rows(h) -> dict[str, list[str]]:
    with session_scope(h.rt.session_factory) as s:
        return {
            t.name: sorted(repr(tuple(r)) for r in s.execute(select(t)))
            for t in Base.metadata.sorted_tables
        }


def digest_json(env) -> dict:
    out = closeloop(env, "digest", "--month", "2026-11", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


TEXT_PARTS = (("feedback", "worked"), ("feedback", "fell_flat"), ("feedback", "objections"))


def figures_only(data: dict) -> dict:
    """The digest without the quoted texts (a forgotten person's words leave those lists)
    and the people's names (a forgotten person's name leaves too)."""
    data = json.loads(json.dumps(data))
    for outer, inner in TEXT_PARTS:
        data[outer].pop(inner)
    data.pop("best_insights")
    data.pop("names")
    return data


def pseudonym_of(h) -> str:
    with session_scope(h.rt.session_factory) as s:
        names = set(
            s.scalars(select(Prompt.user_id).where(Prompt.user_id.startswith(FORGOTTEN_PREFIX)))
        )
    (name,) = names
    return name


def test_forget_a_rep_keeps_the_figures_and_nothing_of_her(harness, env, tmp_path):
    h, slack = harness, harness.slack
    posts = build_history(h)
    before_rows = rows(h)
    before = digest_json(env)
    # three weeks start in November (the third one's prompts went out on Dec 4); the CLI
    # reads the real clock, and until that week closes (Dec 11) its two prompts are not
    # counted yet but "still open" (issue 13: an open week is nobody's miss)
    fb = before["feedback"]
    assert fb["prompted"] + fb["still_open"] == 6 and before["wins"] == 1
    assert "UANA" in json.dumps(before["on_time_per_rep"])

    # Still in the sales group: refused, nothing changed.
    refused = closeloop(env, "forget-user", "UANA", "--yes")
    assert refused.returncode == 2 and "SALES_USERGROUP" in refused.stderr
    assert refused.stderr.count("\n") == 1 and rows(h) == before_rows

    slack.set_usergroup("SSALES", ["UBEN"])  # Ana has left the company
    asked = closeloop(env, "forget-user", "UANA", input="n\n")
    assert asked.returncode == 1 and "nothing changed" in asked.stdout
    assert "1 feedback answer(s)" in asked.stdout and "3 weekly prompt(s)" in asked.stdout
    assert rows(h) == before_rows

    mark = len(slack.calls)
    out = closeloop(env, "forget-user", "UANA", "--yes")
    assert out.returncode == 0, out.stderr
    assert "forgot UANA" in out.stdout and "Umbrella expansion" in out.stdout
    assert "Still in Slack" in out.stdout and "DMs between Closeloop and UANA" in out.stdout
    fake = pseudonym_of(h)
    assert fake not in out.stdout + out.stderr  # the link is printed nowhere

    # No row holds her ID, name, email or the text she wrote.
    after_rows = json.dumps(rows(h))
    for trace in ("UANA", "ana@example.com", "'ana'", *ANA_TEXT):
        assert trace not in after_rows, trace
    assert ANA_QUOTE_EDITED in after_rows and ANA_QUOTE in after_rows  # the deal's record
    with session_scope(h.rt.session_factory) as s:
        assert s.get(Member, "UANA") is None
        entry = s.scalars(select(WinLossEntry).join(Deal).where(Deal.name == "Acme renewal")).one()
        assert entry.author_user_id is None and entry.deal.owner_user_id == fake
        assert entry.deal.owner_email is None
        assert s.scalars(select(WinLossRevision.replaced_by)).one() is None
        waiting = s.scalars(select(Deal).where(Deal.name == "Umbrella expansion")).one()
        assert (waiting.owner_user_id, waiting.owner_email, waiting.nudge_ts) == (None, None, None)
        ben_answer = s.scalars(select(FeedbackAnswer).where(FeedbackAnswer.user_id == "UBEN")).one()
        assert ben_answer.insight == "Same objection as a former colleague heard"
        note = s.scalars(select(Acknowledgement.note).where(Acknowledgement.via == "note")).one()
        assert note == (
            "Pausing the security deck; thanks a former colleague ([email removed]) for flagging it"
        )

    # Ben and Mia are untouched (apart from the mention of Ana in their text, and the
    # outbox record of messages sent about her, which is deleted).
    def theirs(snapshot: str | dict) -> list[str]:
        data = json.loads(snapshot) if isinstance(snapshot, str) else snapshot
        return sorted(
            r
            for table, found in data.items()
            if table not in ("feedback_answers", "acknowledgements", "loop_posts", "outbox")
            for r in found
            if "UBEN" in r or "UMIA" in r or "ben@example.com" in r
        )

    assert theirs(after_rows) == theirs(before_rows)

    # The month's figures are the same; Ana is the pseudonym in the per-rep figures.
    after = digest_json(env)
    assert figures_only(after) == json.loads(json.dumps(figures_only(before)).replace("UANA", fake))
    assert before["names"]["UANA"] == "ana" and after["names"] == {"UBEN": "ben"}
    texts = json.dumps([after["feedback"], after["best_insights"]])
    assert not any(t in texts for t in ANA_TEXT)
    assert BEN_TEXT[0] in texts and BEN_TEXT[1] in texts
    text_digest = closeloop(env, "digest", "--month", "2026-11")
    assert "UANA" not in text_digest.stdout and fake not in text_digest.stdout
    assert "a former colleague" in text_digest.stdout

    # Slack: her post, her entry's post and Mia's note about her were re-rendered.
    updates = [c for c in slack.calls[mark:] if c.method == "chat.update"]
    assert {c.params["ts"] for c in updates} >= {
        posts["ana_post"].response["ts"],
        posts["ana_entry_post"].response["ts"],
    }
    for channel in ("CMKTG", "CWINLOSS"):
        shown = json.dumps(slack.messages[channel])
        assert "UANA" not in shown and "ana@example.com" not in shown, channel
        assert not any(t in shown for t in ANA_TEXT)
    assert "a former colleague" in json.dumps(stored(slack, posts["ana_post"]))
    assert "loop_close" not in json.dumps(stored(slack, posts["ana_post"]))
    assert BEN_TEXT[0] in json.dumps(stored(slack, posts["ben_post"]))

    # Her posts cannot be acknowledged any more (a stale button, a forged click).
    before_ack = rows(h)
    with session_scope(h.rt.session_factory) as s:
        ts = posts["ana_post"].response["ts"]
        post_id = s.scalars(select(LoopPost.id).where(LoopPost.ts == ts)).one()
    h.click("UMIA", "loop_close", str(post_id), channel="CMKTG", message_ts=ts)
    note_modal = slack.calls_to("views.open")[-1].params["view"]
    assert "a former colleague" in json.dumps(note_modal)
    refused = h.submit("UMIA", note_modal, {"note": "We will act on it"}).json()
    assert refused["response_action"] == "errors"  # the modal says why and stays open
    assert "has left and their data was deleted" in refused["errors"]["note"]
    assert rows(h)["acknowledgements"] == before_ack["acknowledgements"]
    # Her deal still waiting for its entry goes to the managers as one without an owner.
    tick(h.rt)
    report = posts_in(slack, "CMGR")[-1]
    assert "Umbrella expansion" in report.params["text"]
    assert "owner has left" in report.params["text"] and "UANA" not in json.dumps(report.params)

    # The win/loss export still imports back unchanged (the owner is the pseudonym).
    exported = closeloop(env, "export", "winloss")
    assert exported.returncode == 0 and fake in exported.stdout and "UANA" not in exported.stdout
    csv_file = tmp_path / "winloss.csv"
    csv_file.write_text(exported.stdout, encoding="utf-8")
    reimported = closeloop(env, "import", "winloss", str(csv_file))
    assert reimported.returncode == 0, reimported.stderr
    assert "0 new, 0 updated, 2 unchanged" in reimported.stdout

    # Twice is fine: nothing more to forget, one line, nonzero; nothing changed.
    settled = rows(h)
    again = closeloop(env, "forget-user", "UANA", "--yes")
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert "holds nothing about UANA" in again.stderr and "already forgotten" in again.stderr
    assert rows(h) == settled


def test_unknown_and_malformed_ids_are_one_line(harness, env):
    for arg, code in (("UZZZ999", 1), ("ana", 2), ("U123 OR 1=1", 2)):
        out = closeloop(env, "forget-user", arg, "--yes")
        assert out.returncode == code, (arg, out.stdout, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("closeloop: ")
        assert "Traceback" not in out.stderr and out.stdout == ""


def test_managers_and_admins_are_removed_from_the_settings_first(harness, env):
    for name in ("SALES_MANAGERS", "ADMIN_USERS"):
        out = closeloop({**env, name: "UMIA"}, "forget-user", "UMIA", "--yes")
        assert out.returncode == 2 and name in out.stderr


def test_forget_a_marketer_keeps_the_acknowledged_rate(harness, env):
    h, slack = harness, harness.slack
    posts = build_history(h)
    before = digest_json(env)
    slack.set_usergroup("SMKTG", ["UOUT"])  # Mia has left; someone else does marketing
    out = closeloop(env, "forget-user", "UMIA", "--yes")
    assert out.returncode == 0, out.stderr
    # The command holds the scheduler role (no bot is running) so it sent the edits itself:
    # the three posts she closed and her three thread replies, none left queued.
    assert "Slack: 6 message(s) edited without them\n" in out.stdout
    assert "queued" not in out.stdout
    fake = None
    with session_scope(h.rt.session_factory) as s:
        acks = s.scalars(select(Acknowledgement)).all()
        assert len(acks) == 3
        assert {a.note for a in acks} == {None}
        fake = acks[0].user_id
        assert fake.startswith(FORGOTTEN_PREFIX) and {a.user_id for a in acks} == {fake}
        assert all(fake in (a.dedup_key or fake) for a in acks)
        edits = {f"ack-reply-edit:{a.id}" for a in acks} | {f"post-edit:{a.post_id}" for a in acks}
        sent = s.execute(
            select(OutboxMessage.key, OutboxMessage.state).where(OutboxMessage.key.in_(edits))
        ).all()
        assert sorted(sent) == sorted((key, OutboxState.SENT) for key in edits)
    assert "UMIA" not in json.dumps(rows(h))
    after = digest_json(env)
    assert figures_only(after) == figures_only(before)
    assert (after["acknowledged"], after["acknowledged_rate"]) == (
        before["acknowledged"],
        before["acknowledged_rate"],
    )
    # The thread reply that quoted her note no longer does; the post says who closed it.
    reply = next(
        m
        for m in slack.messages["CMKTG"].values()
        if m.get("thread_ts") == posts["ben_post"].response["ts"]
        and m["ts"] != posts["ben_post"].response["ts"]
    )
    assert "Pausing the security deck" not in json.dumps(reply)
    assert "a former colleague closed the loop" in reply["text"]
    assert "Loop closed by a former colleague" in json.dumps(stored(slack, posts["ben_post"]))
    # Ana's post is still open to a new marketer.
    assert "loop_close" in json.dumps(stored(slack, posts["ana_post"]))


# --- the service on its own ---------------------------------------------------------------

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_scrub_replaces_mentions_ids_and_emails_only_whole():
    text = "Ask <@U1|ana> or U1 (Ana@Example.com), not U12 or XU1"
    assert privacy.scrub(
        text, user_id="U1", pseudonym="forgotten-x", emails=("ana@example.com",)
    ) == ("Ask a former colleague or forgotten-x ([email removed]), not U12 or XU1")


def test_an_unposted_answer_is_deleted_and_pseudonyms_are_random(db):
    from bot.services import feedback as feedback_svc
    from bot.services import roster

    roster.set_sales_members(db, user_ids=["U1"], now=NOW)
    prompt = Prompt(
        user_id="U1",
        week_start=NOW.date() - timedelta(days=4),
        tz="UTC",
        status="sent",
        remind_at=NOW,
        closes_at=NOW + timedelta(days=3),
        dm_channel="D1",
        dm_ts="1.1",
    )
    db.add(prompt)
    db.flush()
    feedback_svc.record_answer(
        db,
        prompt_id=prompt.id,
        user_id="U1",
        bullets=feedback_svc.Bullets("a", "b", "c"),
        source="dm",
        feedback_channel="C1",
        now=NOW,
    )
    result = privacy.forget(db, user_id="U1", pseudonym=privacy.new_pseudonym(), now=NOW)
    assert result.unposted_deleted == 1 and result.post_ids == []
    assert db.scalars(select(LoopPost)).all() == []
    db.refresh(prompt)
    assert prompt.user_id == result.pseudonym and prompt.dm_channel is None
    assert prompt.status == "answered"
    assert privacy.footprint(db, user_id="U1").empty
    assert privacy.new_pseudonym() != privacy.new_pseudonym()
    with pytest.raises(ValueError):
        privacy.forget(db, user_id="not-an-id", pseudonym=privacy.new_pseudonym(), now=NOW)


def _stored_event(db, event_id: str, event: dict, *, state: str) -> None:
    """An Events API envelope stored in the inbox as a process would, left in ``state``."""
    from bot.services import inbox

    envelope = sample("message_im.slack_docs.json")
    envelope.update(event=event, event_id=event_id)
    envelope["authorizations"][0]["user_id"] = "UBOT"
    assert inbox.claim(db, event_id=event_id, payload=envelope, owner="p1", now=NOW) == 1
    if state == "pending":
        inbox.release(db, event_id=event_id, owner="p1", error="boom", now=NOW)
    elif state == "done":
        inbox.finish(db, event_id=event_id, owner="p1", now=NOW)


def test_stored_events_sent_by_them_are_never_processed_and_others_are_scrubbed(db):
    from bot.services import inbox

    dm = {"type": "message", "channel": "D1", "channel_type": "im", "ts": "1.1"}
    _stored_event(db, "EvHERS", {**dm, "user": "U1", "text": "- a\n- b\n- c"}, state="pending")
    _stored_event(db, "EvHERS2", {**dm, "user": "U1", "text": "- x\n- y"}, state="processing")
    _stored_event(
        db,
        "EvABOUT",
        {**dm, "user": "U2", "text": "- as <@U1> said\n- U12 too\n- mail Ana@example.com"},
        state="pending",
    )
    _stored_event(db, "EvOTHER", {**dm, "user": "U2", "text": "- nothing of her"}, state="pending")
    _stored_event(db, "EvDONE", {**dm, "user": "U1", "text": "- done"}, state="done")
    db.add(
        Deal(
            name="Acme",
            outcome="lost",
            closed_at=NOW,
            owner_user_id="U1",
            owner_email="ana@example.com",
            origin="crm",
            deadline_at=NOW,
        )
    )
    db.flush()
    assert privacy.footprint(db, user_id="U1").events == 3

    result = privacy.forget(db, user_id="U1", pseudonym="forgotten-abc", now=NOW)

    db.expire_all()
    events = {e.event_id: e for e in db.scalars(select(InboundEvent))}
    for hers in ("EvHERS", "EvHERS2"):  # never processed: it would store her words again
        assert (events[hers].state, events[hers].payload) == ("failed", None)
    about = events["EvABOUT"]
    assert about.state == "pending"  # still processed, without her
    assert about.payload["event"]["text"] == (
        "- as a former colleague said\n- U12 too\n- mail [email removed]"
    )
    assert about.payload["event"]["user"] == "U2" and about.payload["event_id"] == "EvABOUT"
    assert events["EvOTHER"].payload["event"]["text"] == "- nothing of her"
    assert events["EvDONE"].state == "done"  # a processed event keeps no payload
    assert "U1" not in json.dumps([e.payload for e in events.values()]).replace("U12", "")
    due = inbox.due_for_replay(db, now=NOW + timedelta(hours=1))
    assert {d.event_id for d in due} == {"EvABOUT", "EvOTHER"}
    assert result.footprint.events == 3
    assert privacy.footprint(db, user_id="U1").events == 0
