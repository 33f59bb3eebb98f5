"""CSV export and import of the leads handed to sales (``closeloop export leads``,
``closeloop import leads``).

The export writes one row per lead with its latest rating (``--ratings``: one row per rating,
the whole history). Cells are neutralised for spreadsheets exactly as the win/loss export
does it (:func:`bot.services.csvio.write_csv`), and the import takes off exactly what that
added (:func:`bot.services.csvio.unquote`): an export imported into an empty database exports
again byte for byte.

Imported leads are history. Nobody is asked about them: they get no DM, no reminder and no
escalation (see :func:`import_leads` for the markers that keep the tick away), and a lead
Closeloop already holds (same external ID, or the ``slack-<n>`` ID an export gives a lead
handed over with /lead) is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from bot.config_leads import LeadSettings
from bot.models import FORGOTTEN_PREFIX, Lead, LeadRating, LeadStatus, Member
from bot.services import csvio
from bot.services import lead_formats as formats
from bot.services import leads as lead_svc
from bot.services.calendar import zone
from bot.services.csvio import QUOTE, Problem, Rejected
from bot.services.deal_input import InvalidField, parse_instant
from bot.services.errors import DomainError

LEAD_COLUMNS = (
    "lead_id",
    "person",
    "email",
    "company",
    "title",
    "source",
    "campaign",
    "context",
    "owner",
    "owner_email",
    "handed_by",
    "handed_at",
    "sla_due_at",
    "definition_version",
    "status",
    "reason",
    "note",
    "rated_by",
    "rated_at",
    "rated_definition_version",
    "first_response_at",
    "on_time",
)
RATING_COLUMNS = (
    "lead_id",
    "person",
    "rating",
    "reason",
    "note",
    "rated_by",
    "rated_at",
    "definition_version",
)
SLACK_PREFIX = csvio.SLACK_PREFIX  # the exported ID of a lead handed over with /lead
IMPORTED_BY = "import"  # rated_by of a rating whose rater the file does not name
ORIGIN = lead_svc.IMPORTED  # the tick's queries pass these by (and the markers below)
IMPORT_BATCH = 2000
FUTURE_SLACK = timedelta(minutes=5)
_USER = re.compile(rf"^(?:[UW][A-Z0-9]+|{FORGOTTEN_PREFIX}[0-9a-f]{{1,22}})$")
_LIMITS = {
    "person": 255,
    "email": 255,
    "company": 255,
    "title": 255,
    "source": 255,
    "campaign": 255,
    "context": lead_svc.MAX_CONTEXT,
    "note": lead_svc.MAX_NOTE,
}


@dataclass(frozen=True)
class LeadRow:
    """One good row: the lead's columns, and its rating's when it is rated."""

    line: int
    external_id: str
    lead: dict[str, Any]
    rating: dict[str, Any] | None


@dataclass
class LeadImportResult:
    new: int = 0
    known: int = 0  # already held: left as they are
    rated: int = 0  # new leads imported with a rating
    unreasoned: int = 0  # rejections the file gives no reason for


def read_leads(
    lines: Iterator[list[str]],
    *,
    reasons: Sequence[str],
    now: datetime,
    source: str | None = None,
    mapping: Mapping[str, str] | None = None,
    statuses: Mapping[str, str] | None = None,
    reason_map: Mapping[str, str] | None = None,
    date_format: str | None = None,
    owners: Mapping[str, str] | None = None,
) -> tuple[list[LeadRow], list[Rejected]]:
    """Parse and check every row (the first is the header); return the good rows and every
    rejected one with its line and all of its problems, in the file's column order."""
    header = [h.strip() for h in next(lines, [])]
    if tuple(header) == RATING_COLUMNS:
        raise DomainError(
            "this is the rating history (closeloop export leads --ratings), which is not "
            "imported: import the file closeloop export leads writes"
        )
    layout = formats.layout(
        header, source=source, mapping=mapping, statuses=statuses, reasons=reason_map
    )
    taxonomy = {r.casefold(): r for r in reasons}
    order = {name: index for index, name in reversed(list(enumerate(header)))}
    rows: list[LeadRow] = []
    rejected: list[Rejected] = []
    seen: dict[str, int] = {}
    line_num = getattr(lines, "line_num", None)
    next_line = (line_num or 1) + 1
    for count, cells in enumerate(lines, start=2):
        if line_num is None:
            line = count
        else:
            line, next_line = next_line, lines.line_num + 1  # type: ignore[attr-defined]
        if not any(cell.strip() for cell in cells):
            continue
        record = {}
        for name, cell in zip(header, cells, strict=False):
            cell = cell.strip()
            record[name] = csvio.unquote(cell) if cell[:1] == QUOTE else cell
        fields, translation = layout.translate(record, date_format=date_format, owners=owners)
        flagged = {p.field for p in translation}
        found = _check(fields, taxonomy, now=now)

        problems = [_problem(layout, record, fields, p.field, p.why) for p in translation] + [
            _problem(layout, record, fields, name, why, value)
            for name, why, value in found
            if name not in flagged
        ]
        problems.sort(key=lambda p: order.get(p.column, len(order)))
        extra = cells[len(header) :]
        if extra:
            problems.append(
                Problem("(row)", ",".join(extra), f"has {len(extra)} cell(s) after the last column")
            )
        lead_id = fields["lead_id"]
        first = seen.get(lead_id) if lead_id else None
        if first is not None:
            problems.append(Problem(layout.label("lead_id"), lead_id, f"is also on line {first}"))
        elif lead_id:
            seen[lead_id] = line
        if problems:
            rejected.append(Rejected(line, tuple(problems)))
            continue
        rows.append(_row(line, fields, taxonomy))
    return rows, rejected


def _problem(
    layout: formats.LeadLayout,
    record: Mapping[str, str],
    fields: Mapping[str, str],
    name: str,
    why: str,
    value: str | None = None,
) -> Problem:
    """A problem named by the file's column, with the cell as the file holds it."""
    column = layout.label(name)
    if name in ("person", "status", *formats.DATE_FIELDS):
        column = _column_of(layout, record, name)
    held = record.get(column, value if value is not None else fields.get(name, ""))
    return Problem(column, held, why)


def _column_of(layout: formats.LeadLayout, record: Mapping[str, str], name: str) -> str:
    """The column a field's value came from in this row (a field may have several)."""
    if name == "person" and not layout.cell(record, "person")[1]:
        for part in ("last_name", "first_name"):
            if part in layout.columns:
                return layout.cell(record, part)[0]
    if name == "status":
        return layout.rating(record)[1]
    return layout.cell(record, name)[0]


def _instant(value: str, name: str) -> datetime | None:
    return parse_instant(value, name)[0] if value else None


def _check(
    f: dict[str, str], taxonomy: Mapping[str, str], *, now: datetime
) -> list[tuple[str, str, str]]:
    """Every problem of one translated row: (field, why, value)."""
    problems: list[tuple[str, str, str]] = []

    def refuse(name: str, why: str) -> None:
        problems.append((name, why, f.get(name, "")))

    for name, value in f.items():
        if "\x00" in value:
            refuse(name, "contains a NUL character")
    lead_id = f["lead_id"]
    if not lead_id:
        refuse("lead_id", "is required")
    elif len(lead_id) > 200:
        refuse("lead_id", "is longer than 200 characters")
    if not f["person"]:
        refuse("person", "is required (the person marketing handed over)")
    for name, limit in _LIMITS.items():
        if len(f[name]) > limit:
            refuse(name, f"is longer than {limit} characters")
    if f["email"] and not lead_svc.EMAIL.match(f["email"]):
        refuse("email", "is not an email address")
    owner = f["owner"]
    if not owner:
        refuse("owner", "is required (a Slack user ID or an email)")
    elif not _USER.match(owner) and not lead_svc.EMAIL.match(owner):
        refuse("owner", "must be a Slack user ID (U...) or an email")
    if f["owner_email"] and not lead_svc.EMAIL.match(f["owner_email"]):
        refuse("owner_email", "is not an email address")
    for name in ("handed_by", "rated_by"):
        value = f[name]
        if value and not _USER.match(value) and not (name == "rated_by" and value == IMPORTED_BY):
            refuse(name, "must be a Slack user ID (U...)")
    times: dict[str, datetime | None] = {}
    for name in formats.DATE_FIELDS:
        try:
            times[name] = _instant(f[name], name)
        except InvalidField as err:
            refuse(name, err.message)
            times[name] = None
    handed = times["handed_at"]
    if not f["handed_at"]:
        refuse("handed_at", "is required (when marketing handed the lead over)")
    elif handed is not None and handed > now + FUTURE_SLACK:
        refuse("handed_at", "is in the future")
    due = times["sla_due_at"]
    if handed is not None and due is not None and due < handed:
        refuse("sla_due_at", "is before handed_at")
    for name in ("definition_version", "rated_definition_version"):
        value = f[name]
        if value and not (value.isdigit() and 0 < int(value) < 2**31):
            refuse(name, "must be a whole number (a definition's version)")
    status = f["status"]
    if status == LeadStatus.REJECTED and f["reason"]:
        if f["reason"].casefold() not in taxonomy:
            refuse(
                "reason",
                "is not one of LEAD_REJECT_REASONS ("
                + ", ".join(taxonomy.values())
                + "): give --reason-map 'TEXT=REASON'",
            )
    return problems


def _row(line: int, f: dict[str, str], taxonomy: Mapping[str, str]) -> LeadRow:
    owner = f["owner"]
    owner_user_id = owner if _USER.match(owner) else None
    owner_email = f["owner_email"] or (None if owner_user_id else owner) or None
    handed = _instant(f["handed_at"], "handed_at")
    assert handed is not None
    lead: dict[str, Any] = {
        "external_id": f["lead_id"],
        "person": f["person"],
        "email": f["email"] or None,
        "company": f["company"] or None,
        "title": f["title"] or None,
        "source": f["source"] or None,
        "campaign": f["campaign"] or None,
        "context": f["context"] or None,
        "owner_user_id": owner_user_id,
        "owner_email": owner_email,
        "handed_by": f["handed_by"] or None,
        "handed_at": handed,
        "sla_due_at": _instant(f["sla_due_at"], "sla_due_at"),  # None: counted on import
        "definition_version": int(f["definition_version"]) if f["definition_version"] else None,
        "status": f["status"],
        "first_response_at": None,
    }
    rating = None
    if f["status"] != LeadStatus.NEW:
        # A CRM rarely says when a lead was rated: then the hand-off time stands for it.
        rated_at = _instant(f["rated_at"], "rated_at") or handed
        reason = taxonomy.get(f["reason"].casefold()) if f["reason"] else None
        rating = {
            "rating": f["status"],
            "reason": reason if f["status"] == LeadStatus.REJECTED else None,
            "note": f["note"] or None,
            "rated_by": f["rated_by"] or owner_user_id or IMPORTED_BY,
            "rated_at": rated_at,
            "definition_version": (
                int(f["rated_definition_version"]) if f["rated_definition_version"] else None
            ),
        }
        lead["first_response_at"] = _instant(f["first_response_at"], "first_response_at") or (
            rated_at
        )
    return LeadRow(line, f["lead_id"], lead, rating)


# --- writing ------------------------------------------------------------------------------


def import_leads(
    session: Session,
    rows: Iterable[LeadRow],
    *,
    s: LeadSettings,
    default_tz: str,
    now: datetime,
    progress: Callable[[int], None] | None = None,
) -> LeadImportResult:
    """Insert the rows' leads (and their ratings) that Closeloop does not hold yet.

    Imported leads are history: their origin (``leads.IMPORTED``) keeps the tick's queries
    away, and they are marked the way those queries read a lead already dealt with:
    ``owner_missing_reported_at`` is set (no owner lookup, so no DM and,
    without a DM, no reminder), and a lead unrated at its SLA, or rated after it, gets
    ``escalated_at`` = its SLA due time (the breach is recorded as the live loop records it,
    and ``escalate_overdue`` passes it by; nobody is told). A row without ``sla_due_at`` has
    it counted from ``handed_at`` with today's LEAD_SLA_* settings in the owner's time zone.
    Batches of :data:`IMPORT_BATCH`, written as the win/loss import writes (COPY on
    PostgreSQL)."""
    result = LeadImportResult()
    zones = {user_id: tz for user_id, tz in session.execute(select(Member.user_id, Member.tz))}
    done = 0
    batch: list[LeadRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) == IMPORT_BATCH:
            _import_batch(session, batch, result, zones, s=s, default_tz=default_tz, now=now)
            done += len(batch)
            batch = []
            if progress:
                progress(done)
    if batch:
        _import_batch(session, batch, result, zones, s=s, default_tz=default_tz, now=now)
        done += len(batch)
        if progress:
            progress(done)
    session.flush()
    return result


def _known(session: Session, ids: list[str]) -> set[str]:
    """Which of these lead IDs Closeloop holds (by external ID, or ``slack-<n>``)."""
    query = select(Lead.external_id).where(csvio._among(session, Lead.external_id, ids))
    known = {external_id for external_id in session.scalars(query) if external_id is not None}
    slack = {
        int(i[len(SLACK_PREFIX) :]): i
        for i in ids
        if i not in known and i.startswith(SLACK_PREFIX) and i[len(SLACK_PREFIX) :].isdigit()
    }
    if slack:
        held = select(Lead.id).where(Lead.id.in_(slack), Lead.external_id.is_(None))
        known.update(slack[pk] for pk in session.scalars(held))
    return known


def _import_batch(
    session: Session,
    batch: list[LeadRow],
    result: LeadImportResult,
    zones: dict[str, str | None],
    *,
    s: LeadSettings,
    default_tz: str,
    now: datetime,
) -> None:
    known = _known(session, [row.external_id for row in batch])
    new = [row for row in batch if row.external_id not in known]
    result.known += len(batch) - len(new)
    if not new:
        return
    leads = []
    for row in new:
        values = dict(row.lead)
        if values["sla_due_at"] is None:
            tz = zone(zones.get(values["owner_user_id"] or ""), default_tz)
            values["sla_due_at"] = lead_svc.sla_deadline(
                values["handed_at"], hours=s.sla_hours, working=s.working_hours, tz=tz
            )
        due, answered = values["sla_due_at"], values["first_response_at"]
        values.update(
            origin=ORIGIN,
            received_at=now,
            nudge_attempts=0,
            owner_missing_reported_at=now,
            escalated_at=due if answered is None or answered > due else None,
        )
        leads.append(values)
    csvio._insert_rows(session, Lead.__table__, leads)
    rated = [row for row in new if row.rating is not None]
    if rated:
        ids = dict(
            session.execute(
                select(Lead.external_id, Lead.id).where(
                    csvio._among(session, Lead.external_id, [row.external_id for row in rated])
                )
            ).all()
        )
        ratings = [{"lead_id": ids[row.external_id], **(row.rating or {})} for row in rated]
        csvio._insert_rows(session, LeadRating.__table__, ratings)
        result.rated += len(ratings)
        result.unreasoned += sum(
            1 for r in ratings if r["rating"] == LeadStatus.REJECTED and not r["reason"]
        )
    result.new += len(new)


# --- export -------------------------------------------------------------------------------


def _lead_id(lead: Lead) -> str:
    return lead.external_id or f"{SLACK_PREFIX}{lead.id}"


def _number(value: int | None) -> str:
    return "" if value is None else str(value)


def _since(query: Any, since: date | None) -> Any:
    if since is None:
        return query
    return query.where(Lead.handed_at >= datetime.combine(since, time(0), UTC))


def lead_rows(session: Session, *, since: date | None = None) -> Iterator[list[str]]:
    """Every lead with its latest rating, as rows of LEAD_COLUMNS, oldest hand-off first.
    ``on_time`` is ``yes`` or ``no`` once the lead is rated (its first rating against its
    SLA), empty while it is not."""
    iso = csvio._iso
    query = _since(
        select(Lead).options(selectinload(Lead.ratings)).order_by(Lead.handed_at, Lead.id), since
    )
    for lead in session.scalars(query).yield_per(1000):
        latest = lead.ratings[-1] if lead.ratings else None
        answered = lead.first_response_at
        yield [
            _lead_id(lead),
            lead.person,
            lead.email or "",
            lead.company or "",
            lead.title or "",
            lead.source or "",
            lead.campaign or "",
            lead.context or "",
            lead.owner_user_id or lead.owner_email or "",
            lead.owner_email or "",
            lead.handed_by or "",
            iso(lead.handed_at),
            iso(lead.sla_due_at),
            _number(lead.definition_version),
            lead.status,
            (latest.reason or "") if latest else "",
            (latest.note or "") if latest else "",
            latest.rated_by if latest else "",
            iso(latest.rated_at) if latest else "",
            _number(latest.definition_version) if latest else "",
            iso(answered),
            "" if answered is None else ("yes" if answered <= lead.sla_due_at else "no"),
        ]


def rating_rows(session: Session, *, since: date | None = None) -> Iterator[list[str]]:
    """Every rating of every lead (the history: a rep may change theirs within 7 days), as
    rows of RATING_COLUMNS, by lead and then in the order they were made."""
    query = _since(
        select(LeadRating, Lead)
        .join(Lead, Lead.id == LeadRating.lead_id)
        .order_by(Lead.handed_at, Lead.id, LeadRating.id),
        since,
    )
    for rating, lead in session.execute(query).yield_per(1000):
        yield [
            _lead_id(lead),
            lead.person,
            rating.rating,
            rating.reason or "",
            rating.note or "",
            rating.rated_by,
            csvio._iso(rating.rated_at),
            _number(rating.definition_version),
        ]
