"""Forgetting one person (``closeloop forget-user U123``): a departed employee's data is
removed or pseudonymised, and every count the digest is built from stays as it was.

What happens to each place a person can appear (docs/privacy.md):

* ``members``: their row (Slack name, time zone) is deleted.
* ``prompts``: kept with their status, so response rates do not change; the user ID becomes
  the pseudonym and the DM's channel and timestamps are cleared.
* ``feedback_answers``: kept as rows (they are counted), the user ID pseudonymised; the text
  they wrote (what worked, what fell flat, the insight, the campaign) is deleted.
* ``loop_posts`` they authored: the author becomes the pseudonym; a post that never reached
  Slack is deleted (it was never counted); the posted ones are re-rendered in Slack without
  their name or text. Nobody can acknowledge them any more (there is nobody to tell).
* ``acknowledgements`` they made: kept (they are the acknowledged rate and the time to
  acknowledge), user ID pseudonymised, their note deleted.
* ``deals`` they owned: a deal with an entry keeps its pseudonymised owner (the 24-hour rule
  per rep still adds up) and loses the owner's email; a deal still waiting for its entry
  loses its owner, and the managers are told on the next tick (as for an unknown owner).
* ``winloss_entries`` and ``winloss_revisions``: the customer's words, the category, the
  competitor and the advice to marketing belong to the company's deal record and are kept;
  the author (and who replaced a revision) is unlinked (NULL).
* ``inbound_events`` (Slack events stored for processing; a processed one keeps no payload):
  an event they sent loses its payload and, if it was not processed yet, is never processed
  (it would bring their data back); another's event naming them is scrubbed like text.
* ``leads`` they owned: kept under the pseudonym (the per-owner SLA and acceptance figures
  still add up), without the owner's email or the ID of the DM that asked them; a lead
  still waiting for its first rating (not an imported one) loses its owner instead, and the
  managers are told on the next tick. The lead's own data (the prospect's name, email,
  company, title) is not theirs and stays as it is.
* ``leads.handed_by``, ``lead_ratings.rated_by``, ``lead_definitions.author`` and
  ``definition_reviews.reviewed_by``: the pseudonym (each is counted or shown as a version).
* Anywhere else (other people's text, keys): a mention of the user ID becomes "a former
  colleague", the bare ID the pseudonym, and their email address "[email removed]".

The pseudonym is ``forgotten-`` and a random token, one per person and run: it is not
derived from the user ID, so nobody can find the rows again by hashing an ID they know.
That is also why a second run cannot tell "already forgotten" from "never known".
"""

from __future__ import annotations

import json
import re
import secrets
import typing
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    CursorResult,
    String,
    Text,
    and_,
    cast,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from bot.models import (
    FORGOTTEN_PREFIX,
    FORMER_COLLEAGUE,
    Acknowledgement,
    Base,
    Deal,
    DefinitionReview,
    FeedbackAnswer,
    InboundEvent,
    InboxState,
    Lead,
    LeadDefinition,
    LeadRating,
    LeadStatus,
    LoopPost,
    Member,
    OutboxMessage,
    OutboxState,
    PostKind,
    Prompt,
    WinLossEntry,
    WinLossRevision,
)
from bot.services import leads as lead_svc
from bot.services import outgoing

USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
EMAIL_REMOVED = "[email removed]"

# Columns that hold the person's ID or their own text, handled one by one in forget();
# everything else is scanned for mentions.
_HANDLED = {
    ("members", "user_id"),
    ("members", "name"),
    ("prompts", "user_id"),
    ("feedback_answers", "user_id"),
    ("loop_posts", "author_user_id"),
    ("acknowledgements", "user_id"),
    ("acknowledgements", "dedup_key"),
    ("deals", "owner_user_id"),
    ("deals", "owner_email"),
    ("winloss_entries", "author_user_id"),
    ("winloss_revisions", "replaced_by"),
    ("leads", "owner_user_id"),
    ("leads", "owner_email"),
    ("leads", "handed_by"),
    ("leads", "nudge_channel"),
    ("lead_ratings", "rated_by"),
    ("lead_definitions", "author"),
    ("definition_reviews", "reviewed_by"),
}


def new_pseudonym() -> str:
    """A fresh ``forgotten-…`` pseudonym (fits every user-ID column)."""
    return FORGOTTEN_PREFIX + secrets.token_hex(6)


@dataclass
class Footprint:
    """What Closeloop holds about one person."""

    user_id: str
    member: bool = False
    prompts: int = 0
    answers: int = 0
    posts: int = 0
    acknowledgements: int = 0
    notes: int = 0
    deals_logged: int = 0
    deals_waiting: int = 0
    entries: int = 0
    revisions: int = 0
    leads_owned: int = 0  # rated or imported: kept under the pseudonym
    leads_waiting: int = 0  # waiting for their first rating: handed to the managers
    leads_handed: int = 0
    ratings: int = 0
    definitions: int = 0  # versions of the lead definition they wrote, and reviews
    mentions: int = 0  # rows of other data naming their ID or email
    events: int = 0  # stored Slack events (with their payload) sent by them or naming them
    emails: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.member
            or self.prompts
            or self.answers
            or self.posts
            or self.acknowledgements
            or self.deals_logged
            or self.deals_waiting
            or self.entries
            or self.revisions
            or self.leads_owned
            or self.leads_waiting
            or self.leads_handed
            or self.ratings
            or self.definitions
            or self.mentions
            or self.events
        )


@dataclass
class Forgotten:
    """What forget() did, and what is left to do in Slack."""

    pseudonym: str
    footprint: Footprint
    post_ids: list[int] = field(default_factory=list)  # channel posts to re-render
    ack_ids: list[int] = field(default_factory=list)  # thread replies to re-render
    unposted_deleted: int = 0
    waiting_deals: list[str] = field(default_factory=list)  # now without an owner
    waiting_leads: list[str] = field(default_factory=list)  # now without an owner


@dataclass(frozen=True)
class _Hit:
    table: str
    pk: tuple
    column: str
    value: str


def _id_pattern(user_id: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(user_id)}(?![A-Za-z0-9])")


def _emails(session: Session, user_id: str) -> tuple[str, ...]:
    """Their email addresses, as the CRM gave them on the deals and leads they own."""
    found: set[str] = set()
    for model in (Deal, Lead):
        rows = session.scalars(
            select(func.lower(model.owner_email))
            .where(model.owner_user_id == user_id, model.owner_email.is_not(None))
            .distinct()
        )
        found.update(e for e in rows if e)
    return tuple(sorted(found))


def _their_leads(user_id: str, emails: tuple[str, ...]):
    """Leads they own: by user ID, or by their email where no other user ID is set."""
    mine = Lead.owner_user_id == user_id
    if emails:
        mine = or_(
            mine,
            and_(Lead.owner_user_id.is_(None), func.lower(Lead.owner_email).in_(emails)),
        )
    return mine


def _waiting_lead():
    """A lead still waiting for its first rating from its owner (imported ones never are:
    they are history, and nobody is asked about them)."""
    return and_(Lead.status == LeadStatus.NEW, Lead.origin != lead_svc.IMPORTED)


def _their_deals(user_id: str, emails: tuple[str, ...]):
    """Deals they own: by user ID, or by their email where no other user ID is set."""
    mine = Deal.owner_user_id == user_id
    if emails:
        mine = or_(
            mine,
            and_(Deal.owner_user_id.is_(None), func.lower(Deal.owner_email).in_(emails)),
        )
    return mine


def _has_entry():
    return select(WinLossEntry.id).where(WinLossEntry.deal_id == Deal.id).exists()


def _scan(session: Session, user_id: str, emails: tuple[str, ...]) -> list[_Hit]:
    """Every (row, text column) in every table that contains the user ID or an email."""
    pattern = _id_pattern(user_id)
    hits = []
    for table in Base.metadata.sorted_tables:
        pk = list(table.primary_key.columns)
        for column in table.columns:
            if not isinstance(column.type, String | Text):
                continue
            needles = [column.contains(user_id, autoescape=True)]
            needles += [func.lower(column).contains(e, autoescape=True) for e in emails]
            for row in session.execute(select(*pk, column).where(or_(*needles))):
                value = row[-1]
                lowered = value.lower()
                if pattern.search(value) or any(e in lowered for e in emails):
                    hits.append(_Hit(table.name, tuple(row[:-1]), column.name, value))
    return hits


def _own_text(session: Session, user_id: str) -> set[tuple[str, tuple]]:
    """(table, pk) of the rows holding their own text (deleted, not scrubbed)."""
    answers = session.scalars(select(FeedbackAnswer.id).where(FeedbackAnswer.user_id == user_id))
    notes = session.scalars(select(Acknowledgement.id).where(Acknowledgement.user_id == user_id))
    return {("feedback_answers", (i,)) for i in answers} | {
        ("acknowledgements", (i,)) for i in notes
    }


def _mentions(session: Session, user_id: str, emails: tuple[str, ...]) -> list[_Hit]:
    own = _own_text(session, user_id)
    return [
        h
        for h in _scan(session, user_id, emails)
        if (h.table, h.column) not in _HANDLED and (h.table, h.pk) not in own
    ]


def _their_events(
    session: Session, user_id: str, emails: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """(events they sent, others' events naming them), among stored events with a payload."""
    as_text = cast(InboundEvent.payload, Text)
    needles = [as_text.contains(user_id, autoescape=True)]
    needles += [func.lower(as_text).contains(e, autoescape=True) for e in emails]
    pattern = _id_pattern(user_id)
    sent, naming = [], []
    rows = session.execute(
        select(InboundEvent.event_id, InboundEvent.payload).where(
            InboundEvent.payload.is_not(None), or_(*needles)
        )
    )
    for event_id, payload in rows:
        if (payload.get("event") or {}).get("user") == user_id:
            sent.append(event_id)
            continue
        text = json.dumps(payload, ensure_ascii=False)
        if pattern.search(text) or any(e in text.lower() for e in emails):
            naming.append(event_id)
    return sent, naming


def _scrub_payload(value, **names):
    """An event payload with every string in it scrubbed (see :func:`scrub`)."""
    if isinstance(value, str):
        return scrub(value, **names)
    if isinstance(value, list):
        return [_scrub_payload(v, **names) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_payload(v, **names) for k, v in value.items()}
    return value


def _count(session: Session, query) -> int:
    return session.scalar(select(func.count()).select_from(query.subquery())) or 0


def footprint(session: Session, *, user_id: str) -> Footprint:
    """What Closeloop holds about ``user_id`` (nothing is changed)."""
    return _footprint(session, user_id)[0]


def _footprint(session: Session, user_id: str) -> tuple[Footprint, list[_Hit]]:
    emails = _emails(session, user_id)
    mine = _their_deals(user_id, emails)
    mentions = _mentions(session, user_id, emails)
    found = Footprint(
        user_id=user_id,
        member=session.get(Member, user_id) is not None,
        prompts=_count(session, select(Prompt.id).where(Prompt.user_id == user_id)),
        answers=_count(session, select(FeedbackAnswer.id).where(FeedbackAnswer.user_id == user_id)),
        posts=_count(session, select(LoopPost.id).where(LoopPost.author_user_id == user_id)),
        acknowledgements=_count(
            session, select(Acknowledgement.id).where(Acknowledgement.user_id == user_id)
        ),
        notes=_count(
            session,
            select(Acknowledgement.id).where(
                Acknowledgement.user_id == user_id, Acknowledgement.note.is_not(None)
            ),
        ),
        deals_logged=_count(session, select(Deal.id).where(mine, _has_entry())),
        deals_waiting=_count(session, select(Deal.id).where(mine, ~_has_entry())),
        entries=_count(
            session, select(WinLossEntry.id).where(WinLossEntry.author_user_id == user_id)
        ),
        revisions=_count(
            session, select(WinLossRevision.id).where(WinLossRevision.replaced_by == user_id)
        ),
        leads_owned=_count(
            session, select(Lead.id).where(_their_leads(user_id, emails), ~_waiting_lead())
        ),
        leads_waiting=_count(
            session, select(Lead.id).where(_their_leads(user_id, emails), _waiting_lead())
        ),
        leads_handed=_count(session, select(Lead.id).where(Lead.handed_by == user_id)),
        ratings=_count(session, select(LeadRating.id).where(LeadRating.rated_by == user_id)),
        definitions=_count(
            session, select(LeadDefinition.version).where(LeadDefinition.author == user_id)
        )
        + _count(
            session, select(DefinitionReview.id).where(DefinitionReview.reviewed_by == user_id)
        ),
        mentions=len({(h.table, h.pk) for h in mentions}),
        events=sum(len(ids) for ids in _their_events(session, user_id, emails)),
        emails=emails,
    )
    return found, mentions


def scrub(text: str, *, user_id: str, pseudonym: str, emails: tuple[str, ...] = ()) -> str:
    """``text`` without the person: a mention becomes "a former colleague", the bare ID
    the pseudonym, an email address of theirs "[email removed]"."""
    text = re.sub(rf"<@{re.escape(user_id)}(?:\|[^>]*)?>", FORMER_COLLEAGUE, text)
    text = _id_pattern(user_id).sub(pseudonym, text)
    for email in emails:
        text = re.sub(re.escape(email), EMAIL_REMOVED, text, flags=re.IGNORECASE)
    return text


def forget(session: Session, *, user_id: str, pseudonym: str, now: datetime) -> Forgotten:
    """Remove or pseudonymise everything about ``user_id`` in ``session`` (see the module
    doc); the caller commits, then re-renders ``post_ids`` and ``ack_ids`` in Slack."""
    if not USER_ID.match(user_id):
        raise ValueError(f"{user_id!r} is not a Slack user ID")
    if not pseudonym.startswith(FORGOTTEN_PREFIX) or len(pseudonym) > 32:
        raise ValueError(f"{pseudonym!r} is not a pseudonym")
    found, mentions = _footprint(session, user_id)  # before any row changes
    result = Forgotten(pseudonym=pseudonym, footprint=found)
    if found.empty:
        return result
    emails = found.emails

    # The outbox is the bot's own record of messages: what went to them, and the settled
    # messages about them, go (a message still waiting to be sent is sent as it is).
    their_dms = set(
        session.scalars(
            select(Prompt.dm_channel).where(
                Prompt.user_id == user_id, Prompt.dm_channel.is_not(None)
            )
        )
    )
    their_dms.update(  # the DMs that asked them to rate their leads
        c
        for c in session.scalars(
            select(Lead.nudge_channel).where(
                _their_leads(user_id, emails), Lead.nudge_channel.is_not(None)
            )
        )
        if c
    )
    session.execute(delete(OutboxMessage).where(OutboxMessage.channel.in_({user_id, *their_dms})))
    session.execute(
        delete(OutboxMessage).where(
            OutboxMessage.state.in_((OutboxState.SENT, OutboxState.FAILED, OutboxState.DROPPED)),
            or_(
                OutboxMessage.text.contains(user_id, autoescape=True),
                cast(OutboxMessage.blocks, Text).contains(user_id, autoescape=True),
            ),
        )
    )

    # Stored Slack events: theirs lose the payload and are never processed (that would
    # store their words again); others' that name them are scrubbed and processed as usual.
    sent, naming = _their_events(session, user_id, emails)
    if sent:
        session.execute(
            update(InboundEvent)
            .where(
                InboundEvent.event_id.in_(sent),
                InboundEvent.state.in_((InboxState.PENDING, InboxState.PROCESSING)),
            )
            .values(
                state=InboxState.FAILED,
                claimed_by=None,
                due_at=None,
                finished_at=now,
                last_error="not processed: its sender was forgotten (closeloop forget-user)",
            )
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(InboundEvent)
            .where(InboundEvent.event_id.in_(sent))
            .values(payload=None)
            .execution_options(synchronize_session=False)
        )
    for event_id in naming:
        event = session.get(InboundEvent, event_id)
        assert event is not None and event.payload is not None
        event.payload = _scrub_payload(
            event.payload, user_id=user_id, pseudonym=pseudonym, emails=emails
        )

    # What Slack shows of them, to re-render once this is committed.
    entry_ids = set(
        session.scalars(
            select(WinLossEntry.id)
            .join(Deal, Deal.id == WinLossEntry.deal_id)
            .where(or_(WinLossEntry.author_user_id == user_id, _their_deals(user_id, emails)))
        )
    )
    answer_ids = set(
        session.scalars(select(FeedbackAnswer.id).where(FeedbackAnswer.user_id == user_id))
    )
    ack_ids = set(
        session.scalars(select(Acknowledgement.id).where(Acknowledgement.user_id == user_id))
    )
    for hit in mentions:
        if hit.table == "feedback_answers":
            answer_ids.add(hit.pk[0])
        elif hit.table == "winloss_entries":
            entry_ids.add(hit.pk[0])
        elif hit.table == "deals":
            entry_ids.update(
                session.scalars(select(WinLossEntry.id).where(WinLossEntry.deal_id == hit.pk[0]))
            )
        elif hit.table == "acknowledgements":
            ack_ids.add(hit.pk[0])
    acked_posts = select(Acknowledgement.post_id).where(Acknowledgement.id.in_(ack_ids))
    result.post_ids = sorted(
        session.scalars(
            select(LoopPost.id).where(
                LoopPost.ts.is_not(None),
                or_(
                    LoopPost.author_user_id == user_id,
                    LoopPost.id.in_(acked_posts),
                    and_(LoopPost.kind == PostKind.FEEDBACK, LoopPost.subject_id.in_(answer_ids)),
                    and_(LoopPost.kind == PostKind.WINLOSS, LoopPost.subject_id.in_(entry_ids)),
                ),
            )
        )
    )
    result.ack_ids = sorted(
        session.scalars(
            select(Acknowledgement.id).where(
                Acknowledgement.id.in_(ack_ids), Acknowledgement.thread_ts.is_not(None)
            )
        )
    )

    # Their posts and thread replies are edited in Slack through the outbox (rendered when
    # sent, so with the pseudonym's "a former colleague").
    for post in session.scalars(select(LoopPost).where(LoopPost.id.in_(result.post_ids))):
        outgoing.loop_post(session, post, now=now)
    for ack in session.scalars(
        select(Acknowledgement).where(Acknowledgement.id.in_(result.ack_ids))
    ):
        outgoing.ack_reply_edit(session, ack, now=now)

    # Their own rows, one table at a time.
    session.execute(delete(Member).where(Member.user_id == user_id))
    session.execute(
        update(Prompt)
        .where(Prompt.user_id == user_id)
        .values(user_id=pseudonym, dm_channel=None, dm_ts=None, reminder_ts=None, last_error=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(FeedbackAnswer)
        .where(FeedbackAnswer.user_id == user_id)
        .values(user_id=pseudonym, worked="", fell_flat="", insight="", campaign=None)
        .execution_options(synchronize_session=False)
    )
    unposted = select(LoopPost.id).where(
        LoopPost.author_user_id == user_id,
        LoopPost.kind == PostKind.FEEDBACK,
        LoopPost.ts.is_(None),
    )
    deleted = session.execute(
        delete(LoopPost)
        .where(LoopPost.id.in_(unposted.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    result.unposted_deleted = typing.cast(CursorResult, deleted).rowcount
    their_posts = select(LoopPost.id).where(LoopPost.author_user_id == user_id)
    session.execute(  # nobody is left to tell about an acknowledgement of their posts
        update(Acknowledgement)
        .where(
            Acknowledgement.post_id.in_(their_posts.scalar_subquery()),
            Acknowledgement.rep_notified_at.is_(None),
        )
        .values(rep_notified_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(LoopPost)
        .where(LoopPost.author_user_id == user_id)
        .values(author_user_id=pseudonym)
        .execution_options(synchronize_session=False)
    )
    for ack in session.scalars(select(Acknowledgement).where(Acknowledgement.user_id == user_id)):
        ack.user_id = pseudonym
        ack.note = None
        if ack.dedup_key:
            ack.dedup_key = _id_pattern(user_id).sub(pseudonym, ack.dedup_key)
    mine = _their_deals(user_id, emails)
    result.waiting_deals = list(
        session.scalars(select(Deal.name).where(mine, ~_has_entry()).order_by(Deal.id))
    )
    session.execute(  # waiting for an entry: no owner now; the managers are told (tick)
        update(Deal)
        .where(mine, ~_has_entry())
        .values(
            owner_user_id=None,
            owner_email=None,
            nudge_channel=None,
            nudge_ts=None,
            nudge_claimed_at=None,
            nudge_attempts=0,
            reminded_at=None,
            owner_missing_reported_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Deal)
        .where(mine, _has_entry())
        .values(owner_user_id=pseudonym, owner_email=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(WinLossEntry)
        .where(WinLossEntry.author_user_id == user_id)
        .values(author_user_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(WinLossRevision)
        .where(WinLossRevision.replaced_by == user_id)
        .values(replaced_by=None)
        .execution_options(synchronize_session=False)
    )
    _forget_leads(session, result, user_id=user_id, pseudonym=pseudonym, emails=emails)
    session.flush()

    # Mentions in everything else (other people's text, keys), checked again afterwards.
    for hit in _scan(session, user_id, emails):
        table = Base.metadata.tables[hit.table]
        column = table.c[hit.column]
        value = scrub(hit.value, user_id=user_id, pseudonym=pseudonym, emails=emails)
        limit = getattr(column.type, "length", None)
        session.execute(
            update(table)
            .where(*(c == v for c, v in zip(table.primary_key.columns, hit.pk, strict=True)))
            .values({hit.column: value[:limit] if limit else value})
        )
    session.flush()
    return result


def _forget_leads(
    session: Session, result: Forgotten, *, user_id: str, pseudonym: str, emails: tuple[str, ...]
) -> None:
    """The lead loop's rows: their leads, hand-offs, ratings, definitions and reviews."""
    mine = _their_leads(user_id, emails)
    result.waiting_leads = list(
        session.scalars(select(Lead.person).where(mine, _waiting_lead()).order_by(Lead.id))
    )
    session.execute(  # waiting for a rating: no owner now; the managers are told (tick)
        update(Lead)
        .where(mine, _waiting_lead())
        .values(
            owner_user_id=None,
            owner_email=None,
            nudge_channel=None,
            nudge_ts=None,
            nudge_claimed_at=None,
            nudge_attempts=0,
            reminded_at=None,
            owner_missing_reported_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(  # rated or imported: counted, so kept under the pseudonym
        update(Lead)
        .where(mine)
        .values(owner_user_id=pseudonym, owner_email=None, nudge_channel=None, nudge_ts=None)
        .execution_options(synchronize_session=False)
    )
    for column, model, who in (
        ("handed_by", Lead, Lead.handed_by),
        ("rated_by", LeadRating, LeadRating.rated_by),
        ("author", LeadDefinition, LeadDefinition.author),
        ("reviewed_by", DefinitionReview, DefinitionReview.reviewed_by),
    ):
        session.execute(
            update(model)
            .where(who == user_id)
            .values({column: pseudonym})
            .execution_options(synchronize_session=False)
        )
