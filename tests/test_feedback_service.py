from datetime import UTC, date, datetime, time

import pytest
from sqlalchemy import func, select

from bot.config import WeeklyTime
from bot.models import (
    FeedbackAnswer,
    LoopPost,
    Member,
    Op,
    OutboxMessage,
    Prompt,
    PromptStatus,
)
from bot.services import feedback as svc
from bot.services import loop as loop_svc
from bot.services import roster as roster_svc
from bot.services.errors import DomainError, NotAllowed
from bot.services.feedback import Bullets, Schedule

SCHEDULE = Schedule(WeeklyTime(4, time(16, 0)), WeeklyTime(0, time(10, 0)))
FRI_BERLIN_1600 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def add_reps(db, *reps):
    now = datetime(2026, 11, 16, tzinfo=UTC)
    roster_svc.set_sales_members(db, user_ids=[r for r, _ in reps], now=now)
    for user_id, tz in reps:
        roster_svc.record_profile(db, user_id=user_id, tz=tz, name=None, now=now)
    db.flush()
    return roster_svc.active_sales(db)


def prompt_for(db, user_id, now):
    due = [
        d
        for d in svc.due_prompts(db, reps=roster_svc.active_sales(db), schedule=SCHEDULE, now=now)
        if d.user_id == user_id
    ]
    assert due, f"{user_id} not due at {now}"
    return svc.claim_prompt(db, due=due[0], schedule=SCHEDULE, now=now)


def test_due_only_after_local_friday_four(db):
    reps = add_reps(db, ("UANA", "Europe/Berlin"), ("UBEN", "America/Los_Angeles"))
    before = svc.due_prompts(
        db, reps=reps, schedule=SCHEDULE, now=FRI_BERLIN_1600.replace(minute=0, hour=14)
    )
    assert before == []
    at = svc.due_prompts(db, reps=reps, schedule=SCHEDULE, now=FRI_BERLIN_1600)
    assert [d.user_id for d in at] == ["UANA"]
    assert at[0].week_start == date(2026, 11, 16)
    la = svc.due_prompts(
        db, reps=reps, schedule=SCHEDULE, now=datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    )
    assert sorted(d.user_id for d in la) == ["UANA", "UBEN"]


def test_claim_is_once_per_rep_per_week(db):
    add_reps(db, ("UANA", "Europe/Berlin"))
    first = prompt_for(db, "UANA", FRI_BERLIN_1600)
    assert first is not None
    # the job firing again sees nothing due, and a racing claim is refused by the database
    assert (
        svc.due_prompts(
            db, reps=roster_svc.active_sales(db), schedule=SCHEDULE, now=FRI_BERLIN_1600
        )
        == []
    )
    from bot.services.feedback import DuePrompt

    again = svc.claim_prompt(
        db,
        due=DuePrompt("UANA", date(2026, 11, 16), "Europe/Berlin"),
        schedule=SCHEDULE,
        now=FRI_BERLIN_1600,
    )
    assert again is None
    # reminder Monday 10:00 Berlin, closes next Friday 16:00 Berlin
    assert first.remind_at == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert first.closes_at == datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def test_rep_without_timezone_uses_default(db):
    reps = add_reps(db, ("UNOTZ", None))
    due = svc.due_prompts(
        db, reps=reps, schedule=SCHEDULE, now=datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
    )
    assert due and due[0].tz == "UTC"


def test_members_leaving_are_not_prompted(db):
    add_reps(db, ("UANA", "Europe/Berlin"), ("UBEN", "Europe/Berlin"))
    roster_svc.set_sales_members(db, user_ids=["UBEN"], now=FRI_BERLIN_1600)
    reps = roster_svc.active_sales(db)
    assert [r.user_id for r in reps] == ["UBEN"]
    assert db.get(Member, "UANA").is_sales is False


THREE = Bullets("w", "f", "i")


def answer(db, prompt, user_id="UANA", bullets=THREE, **overrides):
    """record_answer for ``prompt`` with everyday arguments, ``overrides`` replacing them."""
    kwargs = dict(
        prompt_id=prompt.id,
        user_id=user_id,
        bullets=bullets,
        source="modal",
        feedback_channel="CMKTG",
        now=FRI_BERLIN_1600,
    )
    return svc.record_answer(db, **{**kwargs, **overrides})


def queued(db) -> dict[str, tuple[Op, str | None]]:
    """What the outbox holds for Slack: key -> (operation, the ts an edit edits)."""
    return {m.key: (m.op, m.ts) for m in db.scalars(select(OutboxMessage))}


def test_answer_then_edit_keeps_one_answer_and_one_post(db):
    add_reps(db, ("UANA", "Europe/Berlin"))
    prompt = prompt_for(db, "UANA", FRI_BERLIN_1600)
    svc.mark_sent(prompt, channel="DANA", ts="1.1", now=FRI_BERLIN_1600)
    asked = queued(db)  # the prompt DM itself
    first = answer(db, prompt, bullets=Bullets(" w ", "f", "i"))
    post = db.get(LoopPost, first.post_id)
    assert (first.edited, first.changed, post.ts) == (False, True, None)
    # The post is queued for marketing's channel and the prompt DM for its "answered"; no
    # edit of a post that is not in Slack yet.
    assert queued(db) == asked | {
        f"post:{post.id}": (Op.POST, None),
        f"prompt-done:{prompt.id}:1.1": (Op.UPDATE, "1.1"),
    }
    post.ts = "9.9"  # posted to marketing's channel
    db.flush()
    second = answer(db, prompt, bullets=Bullets("w2", "f2", "i2", "Webinar"), source="dm")
    assert (second.answer_id, second.post_id) == (first.answer_id, first.post_id)
    assert (second.edited, second.changed) == (True, True)
    db.expire_all()
    stored = db.get(FeedbackAnswer, first.answer_id)
    assert (stored.worked, stored.campaign, stored.edit_count) == ("w2", "Webinar", 1)
    assert stored.source == "modal"  # how it first came in
    assert queued(db)[f"post-edit:{first.post_id}"] == (Op.UPDATE, "9.9")  # the post edited
    assert db.get(Prompt, prompt.id).status == PromptStatus.ANSWERED
    assert db.scalar(select(func.count()).select_from(FeedbackAnswer)) == 1
    assert db.scalar(select(func.count()).select_from(LoopPost)) == 1


def test_the_same_answer_again_is_not_an_edit(db):
    """A resubmitted form, or a DM event replayed after its answer was stored, changes
    nothing: no edit counted, no update of the marketing post queued."""
    add_reps(db, ("UANA", "Europe/Berlin"))
    prompt = prompt_for(db, "UANA", FRI_BERLIN_1600)
    first = answer(db, prompt, source="dm")
    db.get(LoopPost, first.post_id).ts = "9.9"
    db.flush()
    before = queued(db)
    assert before[f"post:{first.post_id}"] == (Op.POST, None)
    again = answer(db, prompt, bullets=Bullets("w ", " f", "i", ""), source="dm")
    assert (again.edited, again.changed, again.post_id) == (False, False, first.post_id)
    db.expire_all()
    assert db.get(FeedbackAnswer, first.answer_id).edit_count == 0
    assert queued(db) == before  # no post-edit:<id>


def test_answering_after_skipping_replaces_the_skip(db):
    add_reps(db, ("UANA", "Europe/Berlin"))
    prompt = prompt_for(db, "UANA", FRI_BERLIN_1600)
    svc.record_skip(db, prompt=prompt, user_id="UANA", reason="out", now=FRI_BERLIN_1600)
    db.flush()
    skipped_at = prompt.answered_at
    answer(db, prompt, now=FRI_BERLIN_1600.replace(hour=18))
    db.expire_all()
    stored = db.get(Prompt, prompt.id)
    assert (stored.status, stored.skip_reason) == (PromptStatus.ANSWERED, None)
    assert stored.answered_at == skipped_at  # when the rep first responded that week


def test_only_the_rep_answers_and_missed_weeks_are_closed(db):
    add_reps(db, ("UANA", "Europe/Berlin"))
    prompt = prompt_for(db, "UANA", FRI_BERLIN_1600)
    with pytest.raises(NotAllowed):
        answer(db, prompt, user_id="UBEN")
    with pytest.raises(DomainError):
        answer(db, prompt, bullets=Bullets("w", " ", "i"))
    prompt.status = PromptStatus.SENT
    missed = svc.close_missed(db, now=prompt.closes_at)
    assert missed == [prompt] and prompt.status == PromptStatus.MISSED
    with pytest.raises(DomainError, match="missed"):
        svc.record_skip(db, prompt=prompt, user_id="UANA", reason="out", now=prompt.closes_at)


def test_one_reminder_only(db):
    add_reps(db, ("UANA", "Europe/Berlin"))
    prompt = prompt_for(db, "UANA", FRI_BERLIN_1600)
    svc.mark_sent(prompt, channel="D", ts="1", now=FRI_BERLIN_1600)
    assert svc.due_reminders(db, now=prompt.remind_at.replace(hour=8)) == []
    due = svc.due_reminders(db, now=prompt.remind_at)
    assert due == [prompt]
    assert svc.claim_reminder(db, prompt=prompt, now=prompt.remind_at) is True
    assert svc.claim_reminder(db, prompt=prompt, now=prompt.remind_at) is False
    assert svc.due_reminders(db, now=prompt.remind_at) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n- c", ("a", "b", "c")),
        ("• a\n• b\n• c", ("a", "b", "c")),
        ("1. a\n2) b\n3. c", ("a", "b", "c")),
        ("* a\n  more of a\n* b\n* c", ("a\nmore of a", "b", "c")),
        ("a\nb\nc", ("a", "b", "c")),
        ("- a\n- b", None),
        ("hello", None),
        ("- a\n- b\n- c\n- d", None),
        ("intro\n- a\n- b\n- c", None),
    ],
)
def test_parse_three_bullets(text, expected):
    got = svc.parse_three_bullets(text)
    assert (None if got is None else (got.worked, got.fell_flat, got.insight)) == expected


def test_unescape_slack_text():
    assert svc.unescape_slack("&lt;!channel&gt; &amp;") == "<!channel> &"


def test_acknowledgements(db):
    from bot.models import LoopPost

    post = LoopPost(kind="feedback", subject_id=1, author_user_id="UANA", channel="C", ts="1.2")
    db.add(post)
    db.flush()
    now = FRI_BERLIN_1600
    with pytest.raises(NotAllowed):
        loop_svc.acknowledge(
            db,
            post=post,
            user_id="UOUT",
            marketing_ids={"UMIA"},
            now=now,
            reaction="white_check_mark",
        )
    first = loop_svc.acknowledge(
        db, post=post, user_id="UMIA", marketing_ids={"UMIA"}, now=now, reaction="white_check_mark"
    )
    again = loop_svc.acknowledge(
        db, post=post, user_id="UMIA", marketing_ids={"UMIA"}, now=now, reaction="white_check_mark"
    )
    note = loop_svc.acknowledge(
        db, post=post, user_id="UMIA", marketing_ids={"UMIA"}, now=now, note="pausing that campaign"
    )
    assert first is not None and again is None and note is not None
    assert post.first_ack_at == now
    assert [a.via for a in post.acks] == ["reaction", "note"]
    with pytest.raises(DomainError):
        loop_svc.acknowledge(
            db, post=post, user_id="UMIA", marketing_ids={"UMIA"}, now=now, note="   "
        )


def test_a_week_closed_as_missed_between_the_read_and_the_write_refuses_the_answer(db, monkeypatch):
    """The minute tick closes weeks; an answer whose week closed after record_answer read it
    is refused (the caller rolls its transaction back), not stored over the closing."""
    from sqlalchemy import update

    add_reps(db, ("UANA", "Europe/Berlin"))
    prompt = prompt_for(db, "UANA", FRI_BERLIN_1600)
    svc.mark_sent(prompt, channel="DANA", ts="1.1", now=FRI_BERLIN_1600)
    db.flush()
    real_execute = db.execute

    class Read:
        def __init__(self, rows):
            self.rows = rows

        def first(self):
            return self.rows[0] if self.rows else None

    def racing_execute(statement, *args, **kwargs):
        result = real_execute(statement, *args, **kwargs)
        if statement is svc._ANSWER_STATE:  # the tick closes the week right after the read
            rows = result.all()
            real_execute(update(Prompt).where(Prompt.id == prompt.id).values(status="missed"))
            return Read(rows)
        return result

    monkeypatch.setattr(db, "execute", racing_execute)
    with pytest.raises(DomainError, match="missed"):
        answer(db, prompt)
