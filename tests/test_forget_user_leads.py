"""``closeloop forget-user`` and the lead loop: the leads a rep owned (kept under the
pseudonym, without their email; a lead still waiting goes to the managers), the hand-offs,
ratings, definition versions and reviews they made, the outbox rows meant for them; the
prospect's own data (the lead is not the user) untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.db import session_scope
from bot.models import (
    FORGOTTEN_PREFIX,
    DefinitionReview,
    Lead,
    LeadDefinition,
    LeadRating,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
)
from bot.services import outbox, privacy
from tests.conftest import closeloop

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)


def lead(session, external_id, *, owner="UANA", email=None, status=LeadStatus.NEW, **kw):
    row = Lead(
        external_id=external_id,
        origin=kw.pop("origin", "crm"),
        person=kw.pop("person", f"Prospect {external_id}"),
        email=kw.pop("prospect_email", None),
        company="Acme Corp",
        title="CTO",
        owner_user_id=owner,
        owner_email=email,
        handed_at=NOW - timedelta(days=2),
        received_at=NOW - timedelta(days=2),
        sla_due_at=NOW - timedelta(days=1),
        status=status,
        **kw,
    )
    session.add(row)
    session.flush()
    return row


def rating(session, row, by, kind=LeadStatus.ACCEPTED):
    session.add(LeadRating(lead_id=row.id, rating=kind, rated_by=by, rated_at=NOW))
    row.status = kind
    row.first_response_at = NOW
    session.flush()


def test_forget_a_rep_covers_their_leads_ratings_definitions_and_outbox(db):
    db.add(LeadDefinition(version=1, summary="SQL = budget + need", sections={}, author="UANA"))
    db.flush()
    db.add(DefinitionReview(period="2026-Q4", version=1, reviewed_by="UANA", outcome="edited"))
    rated = lead(
        db,
        "hubspot:contact:51",
        email="ana@example.com",
        person="Jane Doe",
        prospect_email="jane@acme.example",
        handed_by="UMIA",
        context="Ping <@UANA> or ana@example.com about Jane",
        nudge_channel="DANA",
        nudge_ts="1700000000.000100",
    )
    rating(db, rated, "UANA")
    waiting = lead(db, "hubspot:contact:52", nudge_channel="DANA", nudge_ts="1700000000.000200")
    history = lead(db, "hubspot:contact:53", origin="import", owner_missing_reported_at=NOW)
    bens = lead(db, "hubspot:contact:54", owner="UBEN", handed_by="UANA")
    rating(db, bens, "UMGR", LeadStatus.REJECTED)
    by_email = lead(db, "generic:1", owner=None, email="ANA@example.com")
    rating(db, by_email, "UMGR")
    for key, kind, channel in (
        (f"lead-reminder:{waiting.id}", OutboxKind.LEAD_REMINDER, "UANA"),
        (f"lead-rated:{rated.id}", OutboxKind.LEAD_RATED, "DANA"),
        (f"lead-overdue:{waiting.id}", OutboxKind.LEAD_OVERDUE, "CMGR"),
    ):
        outbox.enqueue(db, key=key, kind=kind, channel=channel, subject_id=1, now=NOW)
    db.flush()

    found = privacy.footprint(db, user_id="UANA")
    assert (found.leads_owned, found.leads_waiting, found.leads_handed) == (3, 1, 1)
    assert (found.ratings, found.definitions) == (1, 2)
    assert found.emails == ("ana@example.com",)

    pseudonym = privacy.new_pseudonym()
    done = privacy.forget(db, user_id="UANA", pseudonym=pseudonym, now=NOW)
    db.expire_all()
    assert done.waiting_leads == ["Prospect hubspot:contact:52"]

    rated, waiting, history, bens, by_email = (
        db.get(Lead, row.id) for row in (rated, waiting, history, bens, by_email)
    )
    # Kept (counted), under the pseudonym, without their email or their DM's ID.
    for row in (rated, history, by_email):
        assert (row.owner_user_id, row.owner_email) == (pseudonym, None)
        assert row.nudge_channel is None and row.nudge_ts is None
    assert history.owner_missing_reported_at == NOW  # history stays unchased
    # Waiting for a rating: no owner now; the tick tells the managers (owner missing).
    assert (waiting.owner_user_id, waiting.owner_email, waiting.nudge_ts) == (None, None, None)
    assert waiting.owner_missing_reported_at is None and waiting.status == LeadStatus.NEW
    # What they did on others' leads, and the definition, under the pseudonym.
    assert bens.owner_user_id == "UBEN" and bens.handed_by == pseudonym
    assert [r.rated_by for r in rated.ratings] == [pseudonym]
    assert [r.rated_by for r in bens.ratings] == ["UMGR"]
    assert db.get(LeadDefinition, 1).author == pseudonym
    assert db.scalars(select(DefinitionReview.reviewed_by)).one() == pseudonym
    # The prospect's own data is not theirs; marketing's note loses the mention only.
    assert (rated.person, rated.email, rated.company, rated.title) == (
        "Jane Doe",
        "jane@acme.example",
        "Acme Corp",
        "CTO",
    )
    assert rated.handed_by == "UMIA"
    assert rated.context == "Ping a former colleague or [email removed] about Jane"
    # Nothing more is sent to them; the managers' message about their lead stays queued.
    keys = set(db.scalars(select(OutboxMessage.key)))
    assert keys == {f"lead-overdue:{waiting.id}"}
    # Nothing names them any more.
    assert privacy.footprint(db, user_id="UANA").empty
    assert pseudonym.startswith(FORGOTTEN_PREFIX)


def test_forget_user_from_the_command_line_lists_lead_data_and_checks_definition_owners(
    cli_env, session_factory
):
    with session_scope(session_factory) as s:
        s.add(LeadDefinition(version=1, summary="v1", sections={}, author="UZED"))
        row = lead(s, "generic:2", owner="UBEN", handed_by="UZED")
        rating(s, row, "UZED")
    refused = closeloop({**cli_env, "DEFINITION_OWNERS": "UZED"}, "forget-user", "UZED", "--yes")
    assert refused.returncode == 2 and "DEFINITION_OWNERS" in refused.stderr
    out = closeloop(cli_env, "forget-user", "UZED", "--yes")
    assert out.returncode == 0, out.stderr
    assert "1 lead(s) they handed to sales" in out.stdout
    assert "1 lead rating(s) they made" in out.stdout
    assert "1 lead definition version(s) or review(s)" in out.stdout
    with session_scope(session_factory) as s:
        assert s.scalars(select(LeadRating.rated_by)).one().startswith(FORGOTTEN_PREFIX)
        assert s.scalars(select(Lead.owner_user_id)).one() == "UBEN"
    again = closeloop(cli_env, "forget-user", "UZED", "--yes")
    assert again.returncode == 1
