"""SQLAlchemy 2 typed models on one base with a naming convention (stable constraint names)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# What ``closeloop forget-user`` (services.privacy) puts where a forgotten person's user ID
# was: "forgotten-" and a random token, one per person, never derived from the ID.
FORGOTTEN_PREFIX = "forgotten-"
FORMER_COLLEAGUE = "a former colleague"  # how messages name a forgotten person


def is_forgotten(user_id: str | None) -> bool:
    """True for the pseudonym of someone ``closeloop forget-user`` forgot."""
    return user_id is not None and user_id.startswith(FORGOTTEN_PREFIX)


def utcnow() -> datetime:
    """The current instant, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite forgets)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class Member(Base):
    """A Slack user Closeloop knows: a sales rep (prompted weekly) and their time zone."""

    __tablename__ = "members"

    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    tz: Mapped[str | None] = mapped_column(String(64))
    tz_checked_at: Mapped[datetime | None]
    is_sales: Mapped[bool] = mapped_column(Boolean, default=False)
    home_seen_at: Mapped[datetime | None]  # opened the Home tab at least once
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PromptStatus(StrEnum):
    PENDING = "pending"  # claimed, DM not confirmed sent yet
    SENT = "sent"  # waiting for an answer
    ANSWERED = "answered"
    SKIPPED = "skipped"
    MISSED = "missed"


OPEN_PROMPT = (PromptStatus.SENT, PromptStatus.ANSWERED, PromptStatus.SKIPPED)


class Prompt(Base):
    """One rep's weekly prompt; the unique (user, week) row is what stops double prompts."""

    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("user_id", "week_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    week_start: Mapped[date] = mapped_column(Date, index=True)
    tz: Mapped[str] = mapped_column(String(64))
    status: Mapped[PromptStatus] = mapped_column(
        String(16), default=PromptStatus.PENDING, index=True
    )
    skip_reason: Mapped[str | None] = mapped_column(String(32))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    dm_channel: Mapped[str | None] = mapped_column(String(32))
    dm_ts: Mapped[str | None] = mapped_column(String(32))
    send_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(255))
    remind_at: Mapped[datetime]
    reminded_at: Mapped[datetime | None]
    reminder_ts: Mapped[str | None] = mapped_column(String(32))
    closes_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]

    answer: Mapped[FeedbackAnswer | None] = relationship(back_populates="prompt")


class FeedbackAnswer(Base):
    """A rep's three bullets for one week (editing replaces the text, keeps the row)."""

    __tablename__ = "feedback_answers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), unique=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    worked: Mapped[str] = mapped_column(Text)
    fell_flat: Mapped[str] = mapped_column(Text)
    insight: Mapped[str] = mapped_column(Text)
    campaign: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))  # "modal" or "dm"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    edit_count: Mapped[int] = mapped_column(Integer, default=0)

    prompt: Mapped[Prompt] = relationship(back_populates="answer")


class PostKind(StrEnum):
    FEEDBACK = "feedback"  # a rep's three bullets
    WINLOSS = "winloss"  # a win/loss entry


class LoopPost(Base):
    """A message in marketing's channel that marketing must close the loop on."""

    __tablename__ = "loop_posts"
    __table_args__ = (UniqueConstraint("kind", "subject_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[PostKind] = mapped_column(String(16))
    subject_id: Mapped[int] = mapped_column(Integer)
    author_user_id: Mapped[str] = mapped_column(String(32), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str | None] = mapped_column(String(32), index=True)  # None until posted
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    posted_at: Mapped[datetime | None]
    first_ack_at: Mapped[datetime | None]

    acks: Mapped[list[Acknowledgement]] = relationship(
        back_populates="post", order_by="Acknowledgement.id"
    )


class Acknowledgement(Base):
    """Marketing closing the loop on a post: who, when, how, and what they will change."""

    __tablename__ = "acknowledgements"
    __table_args__ = (UniqueConstraint("post_id", "dedup_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("loop_posts.id"), index=True)
    user_id: Mapped[str] = mapped_column(String(32))
    via: Mapped[str] = mapped_column(String(16))  # "reaction" or "note"
    note: Mapped[str | None] = mapped_column(Text)
    # "reaction:U123:white_check_mark" for reactions so one reaction is one ack; NULL for notes
    dedup_key: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    rep_notified_at: Mapped[datetime | None]

    post: Mapped[LoopPost] = relationship(back_populates="acks")


class InboxState(StrEnum):
    PENDING = "pending"  # stored; waiting for Slack's retry or the tick's replay (due_at)
    PROCESSING = "processing"  # claimed by ``claimed_by`` until ``due_at`` (its lease)
    DONE = "done"  # processed; kept (without its payload) so a retry is ignored
    FAILED = "failed"  # gave up after the last attempt (the payload is kept to look at)


INBOX_FINISHED = (InboxState.DONE, InboxState.FAILED)


class InboundEvent(Base):
    """One Events API event, by event_id, stored before it is processed (the inbox).

    A delivery is claimed (``processing``, a lease until ``due_at``) and marked ``done`` only
    after its listener finished; a failed or abandoned claim is processed again by Slack's
    retry or the tick's replay, a bounded number of times. Retries of a ``done`` event, or of
    one another process is working on, are acknowledged and ignored.
    """

    __tablename__ = "inbound_events"
    __table_args__ = (Index("ix_inbound_events_state_due_at", "state", "due_at"),)

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))  # None once done
    state: Mapped[InboxState] = mapped_column(String(16), default=InboxState.PROCESSING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    due_at: Mapped[datetime | None]  # the claim's lease ends, or the next try is due
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(255))


class CrmSource(StrEnum):
    HUBSPOT = "hubspot"
    SALESFORCE = "salesforce"
    PIPEDRIVE = "pipedrive"
    GENERIC = "generic"


class CrmDelivery(Base):
    """One delivery (an event) from a CRM, stored as received before it is processed.

    Unique by (source, delivery_id): the CRM's own event id, so a retry is recognised and
    answered without doing anything again. ``pending`` until due; ``processing`` under a
    lease (``due_at``) held by ``claimed_by``; ``done`` (``note`` says what came of it) or
    ``failed`` after the last attempt (``last_error``; the body is kept to look at).
    """

    __tablename__ = "crm_deliveries"
    __table_args__ = (
        UniqueConstraint("source", "delivery_id"),
        Index("ix_crm_deliveries_state_due_at", "state", "due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    delivery_id: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    body: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    state: Mapped[InboxState] = mapped_column(String(16), default=InboxState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    due_at: Mapped[datetime | None]  # the next try is due, or the claim's lease ends
    finished_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(String(255))


class Outcome(StrEnum):
    WON = "won"
    LOST = "lost"
    NO_DECISION = "no_decision"


class Competitor(Base):
    """A competitor, known by its normalised key ("competitor x"); merged ones point on."""

    __tablename__ = "competitors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("competitors.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Deal(Base):
    """A closed deal (from the CRM, an import, or a rep logging one the bot never heard of)."""

    __tablename__ = "deals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The CRM's ID; NULL for a deal first heard of through /winloss (NULLs are distinct).
    external_id: Mapped[str | None] = mapped_column(String(120), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16))
    closed_at: Mapped[datetime] = mapped_column(index=True)
    owner_user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    owner_email: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    source: Mapped[str | None] = mapped_column(String(255))
    origin: Mapped[str] = mapped_column(String(16))  # "crm", "import" or "slack"
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline_at: Mapped[datetime] = mapped_column(index=True)
    nudge_channel: Mapped[str | None] = mapped_column(String(32))
    nudge_ts: Mapped[str | None] = mapped_column(String(32))
    nudge_attempts: Mapped[int] = mapped_column(Integer, default=0)
    nudge_claimed_at: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]
    overdue_at: Mapped[datetime | None]
    owner_missing_reported_at: Mapped[datetime | None]
    # The CRM's own lost/won reason ("Price"): shown beside the reason field, never put in it.
    crm_reason: Mapped[str | None] = mapped_column(Text)

    entry: Mapped[WinLossEntry | None] = relationship(back_populates="deal")


class WinLossEntry(Base):
    """The log entry for a deal: the customer's own words, what marketing should change."""

    __tablename__ = "winloss_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("deals.id"), unique=True)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    reason_category: Mapped[str | None] = mapped_column(String(80))
    competitor_id: Mapped[int | None] = mapped_column(ForeignKey("competitors.id"), index=True)
    insight: Mapped[str | None] = mapped_column(Text)
    logged_at: Mapped[datetime] = mapped_column(index=True)
    on_time: Mapped[bool] = mapped_column(Boolean)
    author_user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    edited_at: Mapped[datetime | None]
    edit_count: Mapped[int] = mapped_column(Integer, default=0)

    deal: Mapped[Deal] = relationship(back_populates="entry")
    competitor: Mapped[Competitor | None] = relationship()
    revisions: Mapped[list[WinLossRevision]] = relationship(order_by="WinLossRevision.id")


class WinLossRevision(Base):
    """The text an entry had before an edit (edits never lose what was said)."""

    __tablename__ = "winloss_revisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("winloss_entries.id"), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    reason_category: Mapped[str | None] = mapped_column(String(80))
    competitor_name: Mapped[str | None] = mapped_column(String(120))
    insight: Mapped[str | None] = mapped_column(Text)
    closed_at: Mapped[datetime]
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    source: Mapped[str | None] = mapped_column(String(255))
    replaced_at: Mapped[datetime] = mapped_column(default=utcnow)
    replaced_by: Mapped[str | None] = mapped_column(String(32))


class Digest(Base):
    """One monthly digest; the unique month is what makes it post exactly once."""

    __tablename__ = "digests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[date] = mapped_column(Date, unique=True)  # the first day of the month covered
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    channel: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str | None] = mapped_column(String(32))
    posted_at: Mapped[datetime | None]
    chart_file_id: Mapped[str | None] = mapped_column(String(32))


class LeadStatus(StrEnum):
    """Where a lead handed to sales stands: its latest rating, or not rated yet."""

    NEW = "new"  # handed over, waiting on the owner (the SLA runs)
    ACCEPTED = "accepted"  # sales-qualified
    NOT_READY = "not_ready"  # back to marketing for nurture
    REJECTED = "rejected"  # with a reason from the taxonomy (LEAD_REJECT_REASONS)


LEAD_RATINGS = (LeadStatus.ACCEPTED, LeadStatus.NOT_READY, LeadStatus.REJECTED)


class LeadDefinition(Base):
    """One version of the written definition of a qualified lead: every save is a new row,
    never an edit, so a rating can say which version it was made under."""

    __tablename__ = "lead_definitions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1, 2, 3 ...
    summary: Mapped[str] = mapped_column(Text)
    # Section key (bot.services.definition.SECTIONS: mql, sql, sales_ready, firmographic, ...)
    # -> its text, Markdown.
    sections: Mapped[dict] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(Text)  # what changed, in the author's words
    author: Mapped[str | None] = mapped_column(String(64))  # a user ID; None: from the CLI
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DefinitionReview(Base):
    """The quarterly review of the definition: its owners asked (once a quarter), and the
    answer (*Still right*, or an edit) recorded."""

    __tablename__ = "definition_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period: Mapped[str] = mapped_column(String(16), unique=True)  # "2026-Q4"
    version: Mapped[int | None] = mapped_column(ForeignKey("lead_definitions.version"))
    asked_at: Mapped[datetime] = mapped_column(default=utcnow)
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    reviewed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))  # "still_right" or "edited"


class Lead(Base):
    """A lead marketing handed to sales, waiting to be rated by its owner within the SLA."""

    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The CRM's ID ("hubspot:contact:51", "salesforce:00Q...", "pipedrive:lead:<uuid>",
    # "generic:<id>"; "slack:<view id>" for /lead's modal; NULL: unknown, NULLs are distinct).
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    origin: Mapped[str] = mapped_column(String(16))  # "crm", "hook", "slack" or "import"
    person: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    company: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(String(255))  # the person's role (authority)
    source: Mapped[str | None] = mapped_column(String(255), index=True)
    campaign: Mapped[str | None] = mapped_column(String(255))
    context: Mapped[str | None] = mapped_column(Text)  # what marketing knows
    owner_user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    owner_email: Mapped[str | None] = mapped_column(String(255))
    handed_by: Mapped[str | None] = mapped_column(String(32))  # the marketer (/lead), if known
    handed_at: Mapped[datetime] = mapped_column(index=True)  # the SLA counts from here
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    sla_due_at: Mapped[datetime] = mapped_column(index=True)
    # The definition in force when the lead was handed over (shown in the owner's DM).
    definition_version: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[LeadStatus] = mapped_column(String(16), default=LeadStatus.NEW, index=True)
    first_response_at: Mapped[datetime | None]  # the first rating: late when after sla_due_at
    reminded_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]  # the SLA ran out unrated: the managers were told
    nudge_channel: Mapped[str | None] = mapped_column(String(32))
    nudge_ts: Mapped[str | None] = mapped_column(String(32))
    nudge_attempts: Mapped[int] = mapped_column(Integer, default=0)
    nudge_claimed_at: Mapped[datetime | None]
    owner_missing_reported_at: Mapped[datetime | None]

    ratings: Mapped[list[LeadRating]] = relationship(
        back_populates="lead", order_by="LeadRating.id"
    )


class LeadRating(Base):
    """One rating of a lead; every one is kept (a rep may change theirs within 7 days), and
    the latest is the lead's status."""

    __tablename__ = "lead_ratings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    rating: Mapped[LeadStatus] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(80))  # a rejection's taxonomy entry
    note: Mapped[str | None] = mapped_column(Text)
    rated_by: Mapped[str] = mapped_column(String(32), index=True)
    rated_at: Mapped[datetime] = mapped_column(index=True)
    definition_version: Mapped[int | None] = mapped_column(Integer)  # in force when rated

    lead: Mapped[Lead] = relationship(back_populates="ratings")


class LeadReport(Base):
    """One Monday report of last week's leads; the unique week makes it post exactly once."""

    __tablename__ = "lead_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    week_start: Mapped[date] = mapped_column(Date, unique=True)  # the Monday of the week covered
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    channel: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str | None] = mapped_column(String(32))
    posted_at: Mapped[datetime | None]


class Installation(Base):
    """When this installation began (one row, id 1): its schedule never reaches back before
    it, so a first start sends no prompt whose time had passed and no digest of a month that
    had ended (bot.services.installation says when it is recorded)."""

    __tablename__ = "installation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime]


class JobRun(Base):
    """When a job that runs once a day (or so) is next due, whichever process runs it: the
    row is claimed by moving ``next_at`` on (bot.services.job_runs), so several processes,
    restarts and ``closeloop tick`` from cron run it once."""

    __tablename__ = "job_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_at: Mapped[datetime]
    started_at: Mapped[datetime | None]  # the last run's start
    ok_at: Mapped[datetime | None]  # the last run that finished without an error
    last_error: Mapped[str | None] = mapped_column(String(255))


class OutboxState(StrEnum):
    PENDING = "pending"  # waiting to be sent (or retried at not_before)
    SENDING = "sending"  # claimed by a process; it may or may not have reached Slack
    SENT = "sent"
    FAILED = "failed"  # Slack refused it for good (e.g. the user is deactivated)
    DROPPED = "dropped"  # no longer wanted (the rep answered, the week closed)


class OutboxKind(StrEnum):
    """What an outbox message is; bot.delivery.kinds renders and records each."""

    PROMPT = "prompt"  # the Friday DM (subject: prompt)
    REMINDER = "reminder"  # its reminder (prompt)
    PROMPT_DONE = "prompt_done"  # the prompt DM and reminder marked answered/skipped/missed
    LOOP_POST = "loop_post"  # a post in marketing's channel (loop post)
    LOOP_POST_EDIT = "loop_post_edit"  # that post brought up to date (loop post)
    ACK_REPLY = "ack_reply"  # the thread reply for an acknowledgement (acknowledgement)
    ACK_REPLY_EDIT = "ack_reply_edit"  # that reply re-rendered (forget-user)
    ACK_DM = "ack_dm"  # the rep told that marketing closed the loop (acknowledgement)
    NOTICE = "notice"  # a one-off DM with stored text (a reply, an error, "it is late")
    DEAL_NUDGE = "deal_nudge"  # the owner asked for the win/loss entry (deal)
    DEAL_REMINDER = "deal_reminder"  # and reminded (deal)
    NUDGE_DONE = "nudge_done"  # the nudge DM marked logged (deal)
    OWNER_MISSING = "owner_missing"  # managers told the owner is not in Slack (deal)
    OVERDUE = "overdue"  # managers told the entry is overdue (deal)
    DIGEST = "digest"  # the monthly digest (digest)
    DIGEST_CHART = "digest_chart"  # its chart, in the digest's thread (digest)
    DIGEST_EDIT = "digest_edit"  # the digest's text replaced: no chart after all (digest)
    DIGEST_MISSED = "digest_missed"  # a rep told privately of the weeks they missed (digest)
    LEAD_NUDGE = "lead_nudge"  # the owner asked to rate a lead handed to them (lead)
    LEAD_HANDED = "lead_handed"  # the marketer told who was asked, and by when (lead)
    LEAD_REMINDER = "lead_reminder"  # and reminded before the SLA runs out (lead)
    LEAD_RATED = "lead_rated"  # the nudge DM brought up to date: rated, by whom (lead)
    LEAD_OWNER_MISSING = "lead_owner_missing"  # managers told the owner is not in Slack (lead)
    LEAD_OVERDUE = "lead_overdue"  # managers told the SLA ran out unrated (lead)
    LEAD_REPORT = "lead_report"  # the Monday report to marketing (lead report)
    DEFINITION_CHANGED = "definition_changed"  # a channel told of a new version (definition)
    DEFINITION_REVIEW = "definition_review"  # an owner asked to review it (definition review)
    # Not Slack: the entry's words and category written back to its CRM deal (win/loss
    # entry; ``channel`` names the CRM, "hubspot" or "pipedrive"; op CALL)
    CRM_WRITEBACK = "crm_writeback"
    # Not Slack: a lead's latest rating written back to its CRM record (lead; ``channel``
    # names the CRM: a HubSpot contact's lead status, a Pipedrive lead's field; op CALL)
    LEAD_WRITEBACK = "lead_writeback"


class Op(StrEnum):
    """What sending an outbox message does in Slack."""

    POST = "post"  # chat.postMessage (to a channel, a DM, or a thread with thread_ts)
    UPDATE = "update"  # chat.update of the message ``ts`` in ``channel``
    UPLOAD = "upload"  # a file (files upload v2) into the thread ``thread_ts``
    CALL = "call"  # not Slack: the kind's own ``send`` hook (a CRM write-back)


class OutboxMessage(Base):
    """One message to post, edit or upload in Slack (or, op CALL, one idempotent call to
    another API, a CRM write-back), stored before it is sent.

    The unique ``key`` (``prompt:17``) makes enqueueing idempotent; the row is claimed before
    the send (``claimed_by`` is the claim's own token, checked again by the UPDATE that
    records the result), and a post carries its id in the message metadata, so a send whose
    outcome was lost (crash, dropped connection) is looked for in Slack, back to ``oldest``,
    before it is sent again.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    op: Mapped[Op] = mapped_column(String(16), default=Op.POST)
    subject_id: Mapped[int | None] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(32))
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    ts: Mapped[str | None] = mapped_column(String(32))  # the message an UPDATE edits
    text: Mapped[str] = mapped_column(Text)
    blocks: Mapped[list | None] = mapped_column(JSON)
    state: Mapped[OutboxState] = mapped_column(String(16), default=OutboxState.PENDING)
    not_before: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    maybe_sent: Mapped[bool] = mapped_column(Boolean, default=False)  # look before resending
    # An edit asked for while this one was being sent (with what may be the older version):
    # once it is sent, it is made pending again and sent once more, with the latest.
    rearm: Mapped[bool] = mapped_column(Boolean, default=False)
    # A Slack ts a little before the first attempt: how far back "look before resending" reads
    oldest: Mapped[str | None] = mapped_column(String(32))
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    sent_channel: Mapped[str | None] = mapped_column(String(32))
    sent_ts: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_outbox_state_not_before", "state", "not_before"),)
