"""The written definition of a qualified lead: versioned, shown to anyone, edited by admins
(in a modal or from a Markdown file), reviewed by its owners once a period (a quarter by
default, DEFINITION_REVIEW_MONTHS).

Every save is a new :class:`~bot.models.LeadDefinition` row (version 1, 2, 3 ...), never an
edit, so a rating can say which version it was made under (:func:`current`); the sales and
marketing channels are told of each version once (the outbox key names the version). The
review: at the start of each period the owners are asked about the period that ended, once
(the unique ``definition_reviews.period``), and *Still right* or an edit records the answer.

Plain functions on a Session: they decide, store and enqueue; the caller commits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.models import (
    DefinitionReview,
    Lead,
    LeadDefinition,
    LeadRating,
    LeadStatus,
    Op,
    OutboxKind,
    OutboxMessage,
    OutboxState,
)
from bot.services import outbox
from bot.services.calendar import local_instant
from bot.services.errors import DomainError, NotAllowed

# The sections of the definition, in the order they are shown: key -> title.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("mql", "Marketing-qualified lead (MQL)"),
    ("sql", "Sales-qualified lead (SQL)"),
    ("sales_ready", "Sales-ready"),
    ("firmographic", "Firmographic criteria"),
    ("behavioural", "Behavioural signals"),
    ("authority", "Authority level"),
    ("disqualifiers", "Disqualifiers"),
    ("handoff", "Hand-off rules"),
)
SECTION_KEYS = tuple(key for key, _ in SECTIONS)
TITLES = dict(SECTIONS)
# What each section holds (the modal's hints, the file template).
GUIDANCE = {
    "mql": "Fits the ideal customer profile and took an action (which ones count).",
    "sql": "Sales spoke to them: a real need, a budget, a timeline.",
    "sales_ready": "When a lead is ready for a sales conversation now.",
    "firmographic": "Company size, industry, region, tech stack ...",
    "behavioural": "The actions that count: demo request, pricing page, webinar ...",
    "authority": "Who must be involved: the roles that can buy or champion.",
    "disqualifiers": "What rules a lead out, whatever else it has.",
    "handoff": "When marketing passes a lead, and what context comes with it.",
}
# Other ways a file's ``## heading`` may name a section (compared lowercased, letters only).
ALIASES = {
    "mql": ("mql", "marketing qualified", "marketing qualified lead"),
    "sql": ("sql", "sales qualified", "sales qualified lead"),
    "sales_ready": ("sales ready", "sales ready lead", "ready for sales"),
    "firmographic": ("firmographic", "firmographics", "firmographic criteria"),
    "behavioural": ("behavioural", "behavioral", "behavioural signals", "behavioral signals"),
    "authority": ("authority", "authority level"),
    "disqualifiers": ("disqualifiers", "disqualifier", "disqualifying criteria"),
    "handoff": ("handoff", "hand off", "handoff rules", "hand off rules", "hand offs"),
}
MAX_TEXT = 3000  # a modal's input holds 3,000 characters: a section, the summary
MAX_NOTE = 500
STILL_RIGHT = "still_right"
EDITED = "edited"
HISTORY_LIMIT = 20


def current(session: Session) -> LeadDefinition | None:
    """The definition in force now (the newest version), or None before the first save."""
    return session.scalars(
        select(LeadDefinition).order_by(LeadDefinition.version.desc()).limit(1)
    ).first()


def get(session: Session, version: int) -> LeadDefinition:
    """Version ``version``; DomainError when there is none."""
    found = session.get(LeadDefinition, version)
    if found is None:
        raise DomainError(f"There is no version {version} of the definition.")
    return found


def history(session: Session, *, limit: int = HISTORY_LIMIT) -> list[LeadDefinition]:
    """The newest ``limit`` versions, newest first."""
    return list(
        session.scalars(select(LeadDefinition).order_by(LeadDefinition.version.desc()).limit(limit))
    )


def may_edit(settings: Settings, user_id: str) -> bool:
    """Only admins (ADMIN_USERS) edit it; its owners (DEFINITION_OWNERS) review it, and an
    owner who should edit it too is listed in ADMIN_USERS as well."""
    return bool(user_id) and user_id in settings.admin_users


def check_may_edit(settings: Settings, user_id: str) -> None:
    if not may_edit(settings, user_id):
        raise NotAllowed(
            "Only Closeloop admins (ADMIN_USERS) can edit the definition of a qualified lead, "
            "so nothing was changed. `/closeloop definition` shows it to everyone; ask an "
            "admin to make the change."
        )


def normalise_sections(sections: Mapping[str, str | None]) -> dict[str, str]:
    """Every known key, its text stripped ("" when empty); DomainError for an unknown key."""
    unknown = [key for key in sections if key not in TITLES]
    if unknown:
        raise DomainError(
            f"Unknown section {unknown[0]!r}; the sections are: {', '.join(SECTION_KEYS)}."
        )
    return {key: (sections.get(key) or "").strip() for key in SECTION_KEYS}


def problems(*, summary: str, sections: Mapping[str, str], note: str) -> dict[str, str]:
    """What is wrong with a definition about to be saved: field (``summary``, ``note`` or a
    section key) -> the message, for the modal's inline errors."""
    found: dict[str, str] = {}
    if not summary.strip():
        found["summary"] = "Write a one-paragraph summary of what a qualified lead is."
    elif len(summary.strip()) > MAX_TEXT:
        found["summary"] = f"The summary is over {MAX_TEXT:,} characters."
    for key, text in sections.items():
        if len(text) > MAX_TEXT:
            found[key] = f"{TITLES[key]} is over {MAX_TEXT:,} characters; please shorten it."
    if not note.strip():
        found["note"] = "Say what changed (it goes with the new version to both teams)."
    elif len(note.strip()) > MAX_NOTE:
        found["note"] = f"Keep what changed under {MAX_NOTE} characters."
    return found


def save(
    session: Session,
    *,
    summary: str,
    sections: Mapping[str, str | None],
    note: str,
    author: str | None,
    now: datetime,
    settings: Settings,
    operator: bool = False,
    base_version: int | None = None,
) -> LeadDefinition:
    """Store a new version of the definition and have the sales and marketing channels told.

    ``author``: the Slack user who saved it (they must be an admin or an owner, NotAllowed
    otherwise), or None from the CLI. ``operator``: saved with the ``closeloop`` command
    (whoever runs it is the operator: ``author`` is recorded, not checked).
    ``base_version``: the version the editor started from; a newer one saved meanwhile is
    refused rather than silently overwritten. An unchanged definition is refused too.
    Opened reviews still waiting for an answer are answered "edited" (an edit is a review).
    """
    if not operator:
        check_may_edit(settings, author or "")
    clean = normalise_sections(sections)
    summary, note = summary.strip(), note.strip()
    found = problems(summary=summary, sections=clean, note=note)
    if found:
        raise DomainError(" ".join(dict.fromkeys(found.values())))
    latest = current(session)
    if base_version is not None and latest is not None and latest.version != base_version:
        raise DomainError(
            f"Version {latest.version} was saved while you were editing version "
            f"{base_version}, so yours was not saved. Copy your text, open the definition "
            "again and add your change to the new version."
        )
    if latest is not None and latest.summary == summary and latest.sections == clean:
        raise DomainError(
            f"Nothing changed: this is version {latest.version} as it is, so no new version "
            "was saved."
        )
    version = (latest.version if latest is not None else 0) + 1
    row = LeadDefinition(
        version=version,
        summary=summary,
        sections=clean,
        note=note,
        author=author,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # another save took this number a moment ago
        raise DomainError(
            f"Someone saved version {version} at the same moment, so yours was not saved. "
            "Open the definition again and add your change to theirs."
        ) from None
    for review in session.scalars(
        select(DefinitionReview).where(DefinitionReview.reviewed_at.is_(None))
    ):
        _answer(session, review, by=author, outcome=EDITED, now=now, settings=settings)
    for channel in notice_channels(settings):
        outbox.enqueue(
            session,
            key=f"definition-changed:{version}:{channel}",
            kind=OutboxKind.DEFINITION_CHANGED,
            channel=channel,
            subject_id=version,
            now=now,
        )
    return row


def notice_channels(settings: Settings) -> list[str]:
    """Where a new version is announced: sales's channel and marketing's (once if one)."""
    return list(
        dict.fromkeys(c for c in (settings.leads.sales_channel, settings.feedback_channel) if c)
    )


# --- the Markdown file (closeloop definition set / show) -----------------------------------

_HEADING = re.compile(r"^(#{1,2})(?!#)\s*(.*?)\s*#*\s*$")


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z]+", text.lower().replace("-", " ")))


_BY_HEADING: dict[str, str] = {}
for _key, _title in SECTIONS:
    for _name in (_key.replace("_", " "), _title, *ALIASES[_key]):
        _BY_HEADING[_words(_name)] = _key
_BY_HEADING.update({_words(_title.split("(")[0]): _key for _key, _title in SECTIONS})


def section_for_heading(heading: str) -> str | None:
    """The section key a ``## heading`` names (case and punctuation ignored), or None."""
    return _BY_HEADING.get(_words(heading))


def parse_markdown(text: str) -> tuple[str, dict[str, str]]:
    """A definition written as Markdown -> (summary, sections).

    ``# Title`` then the summary (the paragraphs under it; the title itself when there are
    none), then one ``## Section`` per section, named by its title or key in any case
    ("## Hand-off rules", "## handoff"). Deeper headings (``###``) belong to their section.
    DomainError, one clear line, for an unknown or repeated section or no summary."""
    summary_lines: list[str] = []
    title: str | None = None
    sections: dict[str, list[str]] = {}
    key: str | None = None
    fence = False
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        match = None if fence else _HEADING.match(line)
        if match and match[1] == "#" and key is None and title is None:
            title = match[2]
            continue
        if match and match[1] == "##":
            found = section_for_heading(match[2])
            if found is None:
                known = "; ".join(f"## {t}" for _, t in SECTIONS)
                raise DomainError(
                    f"line {number}: unknown section {match[2]!r}. The sections are: {known}."
                )
            if found in sections:
                raise DomainError(f"line {number}: the section {TITLES[found]!r} appears twice.")
            key = found
            sections[key] = []
            continue
        if match and match[1] == "#":
            raise DomainError(
                f"line {number}: a second '# ' title ({match[2]!r}); sections start with '## '."
            )
        (sections[key] if key is not None else summary_lines).append(line)
    summary = "\n".join(summary_lines).strip() or (title or "").strip()
    if not summary:
        raise DomainError(
            "The file has no summary: start it with '# Qualified lead' and a paragraph "
            "saying what a qualified lead is."
        )
    return summary, {k: "\n".join(lines).strip() for k, lines in sections.items()}


def render_markdown(defn: LeadDefinition | None) -> str:
    """The definition as a Markdown file (``parse_markdown`` reads it back); a template with
    every heading when there is none yet."""
    if defn is None:
        parts = ["# Qualified lead", "", "What a qualified lead is, in one paragraph.", ""]
        for key, title in SECTIONS:
            parts += [f"## {title}", "", GUIDANCE[key], ""]
        return "\n".join(parts)
    parts = [f"# Qualified lead (version {defn.version})", "", defn.summary, ""]
    for key, title in SECTIONS:
        parts += [f"## {title}", ""]
        text = (defn.sections or {}).get(key) or ""
        if text:
            parts += [text, ""]
    return "\n".join(parts)


# --- the periodic review -------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Period:
    """A review period: ``months`` calendar months from the first day of ``year``-``month``
    (a quarter by default). Periods are counted from January of year 0, so with 1, 2, 3,
    4, 6 or 12 months they start in January each year."""

    year: int
    month: int
    months: int = 3

    @classmethod
    def containing(cls, instant: datetime | date, tz: ZoneInfo, months: int) -> Period:
        local = instant.astimezone(tz) if isinstance(instant, datetime) else instant
        index = (local.year * 12 + local.month - 1) // months * months
        return cls(index // 12, index % 12 + 1, months)

    @classmethod
    def parse(cls, label: str, months: int) -> Period | None:
        """The period ``str()`` named ``label``, or None (DEFINITION_REVIEW_MONTHS changed
        since)."""
        if not label[:4].isdigit():
            return None
        for month in range(1, 13):
            found = cls.containing(date(int(label[:4]), month, 1), ZoneInfo("UTC"), months)
            if str(found) == label:
                return found
        return None

    def _shift(self, periods: int) -> Period:
        index = self.year * 12 + self.month - 1 + periods * self.months
        return Period(index // 12, index % 12 + 1, self.months)

    def next(self) -> Period:
        return self._shift(1)

    def previous(self) -> Period:
        return self._shift(-1)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) of the period in ``tz``, as UTC instants."""
        midnight = datetime.min.time()
        return (
            local_instant(self.first_day, midnight, tz),
            local_instant(self.next().first_day, midnight, tz),
        )

    def __str__(self) -> str:
        if self.months == 3:
            return f"{self.year}-Q{(self.month - 1) // 3 + 1}"
        if self.months == 1:
            return f"{self.year}-{self.month:02d}"
        if self.months == 6:
            return f"{self.year}-H{(self.month - 1) // 6 + 1}"
        if self.months == 12:
            return f"{self.year}"
        return f"{self.year}-{self.month:02d}+{self.months}m"


def review_due_at(period: Period, *, at, tz: ZoneInfo) -> datetime:
    """When the owners are asked about ``period``: the first working day after it, at
    ``at`` (DIGEST_TIME) in ``tz`` (DIGEST_TIMEZONE)."""
    day = period.next().first_day
    while day.weekday() >= 5:
        day = date.fromordinal(day.toordinal() + 1)
    return local_instant(day, at, tz)


def review_key(period: str, owner: str) -> str:
    return f"definition-review:{period}:{owner}"


def ask_review(
    session: Session, *, period: Period, owners: Iterable[str], now: datetime
) -> DefinitionReview | None:
    """Ask ``owners`` to review the definition for ``period``, once per period whichever
    process gets here (the unique period); None when it was asked before."""
    label = str(period)
    if session.scalar(select(DefinitionReview.id).where(DefinitionReview.period == label)):
        return None
    latest = current(session)
    review = DefinitionReview(
        period=label, version=latest.version if latest else None, asked_at=now
    )
    try:
        with session.begin_nested():
            session.add(review)
    except IntegrityError:  # another process asked a moment ago
        return None
    for owner in dict.fromkeys(owners):
        outbox.enqueue(
            session,
            key=review_key(label, owner),
            kind=OutboxKind.DEFINITION_REVIEW,
            channel=owner,
            subject_id=review.id,
            now=now,
        )
    return review


def check_may_review(settings: Settings, user_id: str) -> None:
    if user_id in settings.leads.definition_owners or user_id in settings.admin_users:
        return
    raise NotAllowed(
        "Only the definition's owners (DEFINITION_OWNERS) and Closeloop admins can answer its "
        "review, so nothing was recorded."
    )


def reviewed(
    session: Session,
    *,
    period: str,
    by: str | None,
    outcome: str,
    now: datetime,
    settings: Settings,
    operator: bool = False,
) -> bool:
    """Record the answer to ``period``'s review (``still_right`` or ``edited``) by ``by``
    (an owner or an admin; NotAllowed otherwise); False when it was answered already
    (the first answer stands). The owners' DMs are brought up to date."""
    if not operator:
        check_may_review(settings, by or "")
    if outcome not in (STILL_RIGHT, EDITED):
        raise ValueError(f"unknown review outcome {outcome!r}")
    review = session.scalar(
        select(DefinitionReview).where(DefinitionReview.period == period).with_for_update()
    )
    if review is None:
        raise DomainError(f"There is no review of the definition for {period}.")
    if review.reviewed_at is not None:
        return False
    _answer(session, review, by=by, outcome=outcome, now=now, settings=settings)
    return True


def _answer(
    session: Session,
    review: DefinitionReview,
    *,
    by: str | None,
    outcome: str,
    now: datetime,
    settings: Settings,
) -> None:
    review.reviewed_by, review.reviewed_at, review.outcome = by, now, outcome
    # Every owner's DM for this period stops offering the buttons: edited once it is sent (a
    # DM still waiting renders the review as it is then, and goes out answered anyway).
    owners = session.scalars(
        select(OutboxMessage.channel).where(
            OutboxMessage.kind == OutboxKind.DEFINITION_REVIEW,
            OutboxMessage.op == Op.POST,
            OutboxMessage.subject_id == review.id,
            OutboxMessage.state.not_in((OutboxState.FAILED, OutboxState.DROPPED)),
        )
    ).all()
    for owner in owners:
        outbox.enqueue(
            session,
            key=f"definition-reviewed:{review.period}:{owner}",
            kind=OutboxKind.DEFINITION_REVIEW,
            op=Op.UPDATE,
            channel=owner,
            subject_id=review.id,
            now=now,
            again=True,
        )


def review_message_of(session: Session, review_id: int, owner: str) -> tuple[str, str] | None:
    """(channel, ts) of the review DM sent to ``owner``, once it is sent."""
    review = session.get(DefinitionReview, review_id)
    if review is None:
        return None
    row = session.execute(
        select(OutboxMessage.state, OutboxMessage.sent_channel, OutboxMessage.sent_ts).where(
            OutboxMessage.key == review_key(review.period, owner)
        )
    ).first()
    if row is None or row.state != OutboxState.SENT or not row.sent_ts:
        return None
    return row.sent_channel or owner, row.sent_ts


def post_state(session: Session, review_id: int, owner: str) -> OutboxState | None:
    review = session.get(DefinitionReview, review_id)
    if review is None:
        return None
    return session.scalar(
        select(OutboxMessage.state).where(OutboxMessage.key == review_key(review.period, owner))
    )


def _add_months(instant: datetime, months: int) -> datetime:
    index = instant.year * 12 + instant.month - 1 + months
    year, month = index // 12, index % 12 + 1
    day = instant.day
    while True:
        try:
            return instant.replace(year=year, month=month, day=day)
        except ValueError:  # the 31st of a shorter month
            day -= 1


def last_reviewed_at(session: Session) -> datetime | None:
    """The last time the definition was looked at: a review answered, or a new version."""
    answered = session.scalar(select(func.max(DefinitionReview.reviewed_at)))
    saved = session.scalar(select(func.max(LeadDefinition.created_at)))
    found = [t for t in (answered, saved) if t is not None]
    return max(found) if found else None


@dataclass(frozen=True)
class ReviewStatus:
    """The definition as the admins' Home tab sees it."""

    version: int | None  # None: no definition written yet
    last_reviewed_at: datetime | None
    overdue: bool  # not reviewed (nor edited) for two review periods


def review_status(session: Session, *, now: datetime, months: int) -> ReviewStatus:
    """Whether the definition went two review periods (two quarters) without a review; an
    edit counts as one."""
    latest = current(session)
    last = last_reviewed_at(session)
    overdue = latest is not None and last is not None and _add_months(last, 2 * months) <= now
    return ReviewStatus(
        version=latest.version if latest else None, last_reviewed_at=last, overdue=overdue
    )


COUNTS = ("handed", "rated", "rejected")


def has_leads(session: Session) -> bool:
    return session.scalar(select(Lead.id).limit(1)) is not None


def rejection_figures(session: Session, *, start: datetime, end: datetime, min_sample: int) -> dict:
    """The period's leads: handed over, rated, rejected (by reason), and the rejection rate
    by source (rejected / rated; no rate below ``min_sample`` rated). A lead counts in the
    period it was handed over in, with its latest rating."""
    in_period = (Lead.handed_at >= start, Lead.handed_at < end)
    by_source: dict[str, dict[str, int]] = {}
    for source, status, count in session.execute(
        select(Lead.source, Lead.status, func.count())
        .where(*in_period)
        .group_by(Lead.source, Lead.status)
    ):
        row = by_source.setdefault(source or "(no source)", dict.fromkeys(COUNTS, 0))
        row["handed"] += count
        if status != LeadStatus.NEW:
            row["rated"] += count
        if status == LeadStatus.REJECTED:
            row["rejected"] += count
    latest = (
        select(func.max(LeadRating.id))
        .join(Lead, Lead.id == LeadRating.lead_id)
        .where(*in_period, Lead.status == LeadStatus.REJECTED)
        .group_by(LeadRating.lead_id)
    )
    reasons = sorted(
        (
            (reason or "(no reason)", count)
            for reason, count in session.execute(
                select(LeadRating.reason, func.count())
                .where(LeadRating.id.in_(latest))
                .group_by(LeadRating.reason)
            )
        ),
        key=lambda item: (-item[1], item[0]),
    )

    def rate(rejected: int, rated: int) -> float | None:
        return rejected / rated if rated and rated >= min_sample else None

    ordered = sorted(by_source.items(), key=lambda i: (-i[1]["rejected"], -i[1]["handed"], i[0]))
    sources: list[dict[str, Any]] = [
        {"source": name, **row, "rate": rate(row["rejected"], row["rated"])}
        for name, row in ordered
    ]
    handed = sum(row["handed"] for row in by_source.values())
    rated = sum(row["rated"] for row in by_source.values())
    rejected = sum(row["rejected"] for row in by_source.values())
    return {
        "handed": handed,
        "rated": rated,
        "rejected": rejected,
        "rate": rate(rejected, rated),
        "reasons": reasons,
        "sources": sources,
        "min_sample": min_sample,
    }
