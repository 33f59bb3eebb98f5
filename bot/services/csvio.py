"""CSV import and export of the win/loss log (and export of weekly feedback).

An export imports back unchanged: the same columns, ISO 8601 times, owners as Slack user IDs
(or the email an imported row gave).

Cells are written safe to open in a spreadsheet (OWASP, "CSV Injection"): a cell that starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a single quote in front, so a
reason a rep typed as ``=HYPERLINK(...)`` is shown as text instead of run. So that the quote
stays unambiguous, a cell that already starts with a quote followed by one of those characters
or by another quote gets one more. Import takes off exactly one leading quote when a second
character of that kind follows it, which is what export added; any other cell, including
``'plain`` in a CSV someone wrote by hand, is read as it is.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import IO, Any, TypeVar

from sqlalchemy import String, any_, cast, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, joinedload, selectinload

from bot.models import (
    Deal,
    FeedbackAnswer,
    LoopPost,
    PostKind,
    Prompt,
    UTCDateTime,
    WinLossEntry,
)
from bot.services import competitors as competitor_svc
from bot.services import crm_formats, deal_input
from bot.services import winloss as wl_svc

T = TypeVar("T")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # OWASP: what makes a spreadsheet run a cell
QUOTE = "'"
SLACK_PREFIX = "slack-"  # the exported ID of a deal first heard of in Slack
WINLOSS_COLUMNS = (
    "deal_id",
    "deal_name",
    "outcome",
    "closed_at",
    "logged_at",
    "reason",
    "reason_category",
    "competitor",
    "insight",
    "amount",
    "source",
    "owner",
)
FEEDBACK_COLUMNS = (
    "week_start",
    "user_id",
    "status",
    "skip_reason",
    "worked",
    "fell_flat",
    "insight",
    "campaign",
    "answered_at",
    "acknowledged_at",
    "acknowledged_by",
    "notes",
)


@dataclass(frozen=True)
class ImportRow:
    line: int
    deal: deal_input.DealIn
    logged_at: datetime
    reason: str
    reason_category: str | None
    competitor: str | None
    insight: str | None
    currency: str | None = None  # the amount's, when the export says (flagged if not CURRENCY)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one cell: its column, what it held, and why it is refused."""

    column: str
    value: str
    why: str

    def __str__(self) -> str:
        held = f"(value {self.value!r})" if self.value else "(empty)"
        return f"{self.column}: {self.why} {held}"


@dataclass(frozen=True)
class Rejected:
    """A row that cannot be imported, with every problem found in it."""

    line: int
    problems: tuple[Problem, ...]

    @property
    def why(self) -> str:
        return "; ".join(str(problem) for problem in self.problems)


@dataclass
class ImportResult:
    new: int = 0
    updated: int = 0
    unchanged: int = 0


def read_winloss(
    stream: IO[str],
    *,
    categories: Sequence[str],
    now: datetime | None = None,
    source: str | None = None,
    mapping: Mapping[str, str] | None = None,
    date_format: str | None = None,
    owners: Mapping[str, str] | None = None,
) -> tuple[list[ImportRow], list[Rejected]]:
    """Parse and check every row; return the good rows and every rejected one with its line
    and all of its problems (one pass reports everything wrong with the file).

    The file is Closeloop's own export or a CRM's (``source``, or whichever the header
    matches: see :mod:`bot.services.crm_formats`), comma- or semicolon-separated. A close
    date must be in the range the modal and the webhook accept, as of ``now`` (default: the
    wall clock)."""
    return read_records(
        csv_lines(stream),
        categories=categories,
        now=now or datetime.now(UTC),
        source=source,
        mapping=mapping,
        date_format=date_format,
        owners=owners,
    )


def csv_lines(stream: IO[str]) -> Iterator[list[str]]:
    """A CSV's rows, split on ``;`` when its header line has more of them than ``,``."""
    text = stream.read()
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)


def read_records(
    lines: Iterator[list[str]],
    *,
    categories: Sequence[str],
    now: datetime,
    source: str | None = None,
    mapping: Mapping[str, str] | None = None,
    date_format: str | None = None,
    owners: Mapping[str, str] | None = None,
    stages: Mapping[str, str] | None = None,
) -> tuple[list[ImportRow], list[Rejected]]:
    """:func:`read_winloss` on rows already split into cells (a CSV reader, a spreadsheet's
    rows): the first is the header. Each row's line is the reader's ``line_num`` when it has
    one (a quoted cell may span lines), else its position."""
    header = [h.strip() for h in next(lines, [])]
    layout = crm_formats.layout(header, source=source, mapping=mapping, stages=stages)
    by_casefold = {c.casefold(): c for c in categories}
    order = {name: index for index, name in reversed(list(enumerate(header)))}
    rows: list[ImportRow] = []
    rejected: list[Rejected] = []
    seen: dict[str, int] = {}
    line_num = getattr(lines, "line_num", None)
    next_line = (line_num or 1) + 1  # after the header
    for count, cells in enumerate(lines, start=2):
        if line_num is None:
            line = count
        else:
            line, next_line = next_line, lines.line_num + 1  # type: ignore[attr-defined]
        if not any(cells) or not any(cell.strip() for cell in cells):
            continue  # a blank line, as csv.DictReader skips
        record = {}
        for name, cell in zip(header, cells, strict=False):
            cell = cell.strip()
            record[name] = unquote(cell) if cell[:1] == QUOTE else cell
        extra = cells[len(header) :]
        fields, translation = layout.translate(record, date_format=date_format, owners=owners)
        row, found = _row(line, fields, by_casefold, now=now)
        if not translation and not found and not extra and row is not None:  # the usual row
            deal_id = row.deal.external_id
            first = seen.get(deal_id)
            if first is None:
                seen[deal_id] = line
                rows.append(row)
                continue
        flagged = {p.field for p in translation}
        if "closed_at" in flagged and not fields["logged_at"]:
            flagged.add("logged_at")  # it was to be the close: one problem, not two
        problems = [
            Problem(layout.label(p.field), record.get(layout.label(p.field), ""), p.why)
            for p in translation
        ] + [
            Problem(layout.label(p.column), record.get(layout.label(p.column), p.value), p.why)
            for p in found
            if p.column not in flagged
        ]
        problems.sort(key=lambda p: order.get(p.column, len(order)))  # in the file's order
        if extra:
            problems.append(
                Problem("(row)", ",".join(extra), f"has {len(extra)} cell(s) after the last column")
            )
        deal_id = fields.get("deal_id") or ""
        first = seen.get(deal_id) if deal_id else None
        if first is not None:
            problems.append(Problem(layout.label("deal_id"), deal_id, f"is also on line {first}"))
        elif deal_id:
            seen[deal_id] = line
        if problems or row is None:
            rejected.append(Rejected(line, tuple(problems)))
            continue
        rows.append(row)
    return rows, rejected


def _row(
    line: int, r: dict[str, str], categories: dict[str, str], *, now: datetime
) -> tuple[ImportRow | None, list[Problem]]:
    """The row, or None and every problem found in it (each column is checked)."""
    problems: list[Problem] = []

    def refuse(column: str, why: str) -> None:
        problems.append(Problem(column, r.get(column) or "", why))

    def check(column: str, parse: Callable[[str | None], T]) -> T | None:
        try:
            return parse(r.get(column))
        except deal_input.InvalidField as err:
            refuse(column, err.message)
            return None

    nul = [column for column, cell in r.items() if "\x00" in cell]
    for column in nul:  # PostgreSQL's text cannot hold one
        refuse(column, "contains a NUL character")
    deal_id = r.get("deal_id") or ""
    if not deal_id:
        refuse("deal_id", "is required")
    elif len(deal_id) > 120:
        refuse("deal_id", "is too long")
    name = r.get("deal_name") or ""
    if not name:
        refuse("deal_name", "is required")
    elif len(name) > 255:
        refuse("deal_name", "is too long")
    outcome = check("outcome", deal_input.parse_outcome)
    closed = check("closed_at", lambda v: deal_input.parse_closed_at(v, now=now))
    logged = check("logged_at", lambda v: deal_input.parse_instant(v, "logged_at"))
    reason = r.get("reason") or ""
    if not reason:
        refuse("reason", "is required (the customer's own words)")
    elif len(reason) > wl_svc.MAX_TEXT:
        refuse("reason", f"is longer than {wl_svc.MAX_TEXT} characters")
    category_text = r.get("reason_category") or ""
    category = None
    if category_text:
        category = categories.get(category_text.casefold())
        if category is None:
            refuse("reason_category", f"is not one of: {', '.join(categories.values())}")
    competitor = r.get("competitor") or None
    if competitor and len(competitor) > competitor_svc.MAX_NAME:
        refuse("competitor", f"is longer than {competitor_svc.MAX_NAME} characters")
    insight = r.get("insight") or None
    if insight and len(insight) > wl_svc.MAX_TEXT:
        refuse("insight", f"is longer than {wl_svc.MAX_TEXT} characters")
    owner = check("owner", deal_input.parse_owner)
    amount = check("amount", deal_input.parse_amount)
    source = r.get("source") or None
    if source and len(source) > 255:
        refuse("source", "is longer than 255 characters")
    currency = (r.get("currency") or "").upper() or None
    if currency and not re.fullmatch(r"[A-Z]{3}", currency):
        refuse("currency", "is not a three-letter currency code like USD")
    if problems or outcome is None or closed is None or logged is None or owner is None:
        return None, problems
    deal = deal_input.DealIn(
        external_id=deal_id,
        name=name,
        outcome=outcome,
        closed_at=closed[0],
        owner_user_id=owner[0],
        owner_email=owner[1],
        amount=amount,
        source=source,
        closed_on_date_only=closed[1],
    )
    row = ImportRow(line, deal, logged[0], reason, category, competitor, insight, currency)
    return row, []


IMPORT_BATCH = 2000  # rows looked up, compared and inserted together


def import_winloss(
    session: Session,
    rows: Iterable[ImportRow],
    *,
    deadline_hours: int,
    now: datetime,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Upsert each row's deal and entry by deal_id; rows already as stored change nothing.

    Rows go in batches of :data:`IMPORT_BATCH`: the batch's known deals are read with one
    query, new deals and their entries are written with one multi-row INSERT each, and each
    competitor name is resolved once per import. A changed row keeps its old text as a
    revision, as an edit in Slack does. ``progress`` is called with the rows done so far after
    each batch."""
    result = ImportResult()
    competitor_ids: dict[str, int | None] = {}
    done = 0
    batch: list[ImportRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) == IMPORT_BATCH:
            _import_batch(session, batch, result, competitor_ids, hours=deadline_hours, now=now)
            done += len(batch)
            batch = []
            if progress:
                progress(done)
    if batch:
        _import_batch(session, batch, result, competitor_ids, hours=deadline_hours, now=now)
        done += len(batch)
        if progress:
            progress(done)
    session.flush()
    return result


def _import_batch(
    session: Session,
    batch: list[ImportRow],
    result: ImportResult,
    competitor_ids: dict[str, int | None],
    *,
    hours: int,
    now: datetime,
) -> None:
    known = _known_deals(session, [row.deal.external_id for row in batch])
    new: list[tuple[ImportRow, int | None]] = []
    for row in batch:
        name = row.competitor or ""
        if name not in competitor_ids:
            found = competitor_svc.get_or_create(session, name)
            competitor_ids[name] = found.id if found else None
        competitor_id = competitor_ids[name]
        deal = known.get(row.deal.external_id)
        if deal is None:
            new.append((row, competitor_id))
            continue
        outcome = _update_one(session, deal, row, competitor_id, now=now)
        setattr(result, outcome, getattr(result, outcome) + 1)
    if new:
        _insert_new(session, new, hours=hours, now=now)
        result.new += len(new)
    session.flush()
    for deal in known.values():  # done with them: a long import keeps no row it compared
        if deal.entry is not None:
            session.expunge(deal.entry)
        session.expunge(deal)


def _known_deals(session: Session, deal_ids: list[str]) -> dict[str, Deal]:
    """The stored deals these IDs name (see :func:`find_deal`), with entries, by the ID."""
    load = (selectinload(Deal.entry).joinedload(WinLossEntry.competitor),)
    known = {
        deal.external_id: deal
        for deal in session.scalars(
            select(Deal).where(_among(session, Deal.external_id, deal_ids)).options(*load)
        )
        if deal.external_id is not None
    }
    slack = {
        int(deal_id[len(SLACK_PREFIX) :]): deal_id
        for deal_id in deal_ids
        if deal_id not in known and _slack_number(deal_id)
    }
    if slack:
        query = select(Deal).where(Deal.id.in_(slack), Deal.external_id.is_(None))
        for deal in session.scalars(query.options(*load)):
            known[slack[deal.id]] = deal
    return known


def _among(session: Session, column: Any, values: list[str]) -> Any:
    """``column IN (values)``; on PostgreSQL ``column = ANY(array)``: one parameter instead of
    thousands, which psycopg would otherwise parse out of the statement in Python."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(cast(values, ARRAY(String)))
    return column.in_(values)


def _slack_number(deal_id: str) -> bool:
    return deal_id.startswith(SLACK_PREFIX) and deal_id[len(SLACK_PREFIX) :].isdigit()


def _insert_new(
    session: Session, new: list[tuple[ImportRow, int | None]], *, hours: int, now: datetime
) -> None:
    """New deals and their entries: one multi-row INSERT each (no ORM object per row)."""
    deals: list[dict[str, Any]] = []
    deadlines: list[datetime] = []
    for row, _ in new:
        d = row.deal
        deadlines.append(
            deal_input.deadline_for(d.closed_at, date_only=d.closed_on_date_only, hours=hours)
        )
        deals.append(
            {
                "external_id": d.external_id,
                "origin": "import",
                "received_at": now,
                "name": d.name,
                "outcome": d.outcome,
                "closed_at": d.closed_at,
                "owner_user_id": d.owner_user_id,
                "owner_email": d.owner_email,
                "amount": d.amount,
                "source": d.source,
                "deadline_at": deadlines[-1],
                "nudge_attempts": 0,
            }
        )
    # Rows in, then one SELECT of the IDs: psycopg re-parses each multi-row
    # INSERT ... RETURNING statement in Python, which took most of the time on PostgreSQL.
    _insert_rows(session, Deal.__table__, deals)
    query = select(Deal.external_id, Deal.id).where(
        _among(session, Deal.external_id, [values["external_id"] for values in deals])
    )
    ids = {external_id: deal_id for external_id, deal_id in session.execute(query)}
    _insert_rows(
        session,
        WinLossEntry.__table__,
        [
            {
                "deal_id": ids[row.deal.external_id],
                "outcome": row.deal.outcome,
                "reason": row.reason,
                "reason_category": row.reason_category,
                "competitor_id": competitor_id,
                "insight": row.insight,
                "logged_at": row.logged_at,
                "on_time": row.logged_at <= deadline,
                "author_user_id": row.deal.owner_user_id,
                "edit_count": 0,
            }
            for (row, competitor_id), deadline in zip(new, deadlines, strict=True)
        ],
    )


def _insert_rows(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """INSERT ``rows`` (dicts with the same keys): PostgreSQL's COPY through psycopg, several
    times faster than an executemany there; elsewhere one executemany."""
    connection = session.connection()
    if connection.dialect.name != "postgresql" or connection.dialect.driver != "psycopg":
        session.execute(insert(table), rows)
        return
    columns = list(rows[0])
    for name in columns:  # what the column types would do to a value (UTCDateTime: to UTC)
        if isinstance(table.c[name].type, UTCDateTime):
            for row in rows:
                if row[name] is not None:
                    row[name] = row[name].astimezone(UTC)
    names = ", ".join(f'"{name}"' for name in columns)
    with connection.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
        with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([row[name] for name in columns])


def _update_one(
    session: Session, deal: Deal, row: ImportRow, competitor_id: int | None, *, now: datetime
) -> str:
    """A row for a deal already stored: "new" (its entry), "unchanged" or "updated"."""
    d = row.deal
    entry = deal.entry
    owner_user_id, owner_email = d.owner_user_id, d.owner_email
    if owner_user_id is not None and owner_user_id == deal.owner_user_id:
        owner_email = deal.owner_email  # the email the CRM gave stays with its resolved ID
    elif owner_email is not None and owner_email == deal.owner_email:
        owner_user_id = deal.owner_user_id  # an export of an email owner: same person
    wanted_deal = {
        "name": d.name,
        "outcome": d.outcome,
        "closed_at": d.closed_at,
        "owner_user_id": owner_user_id,
        "owner_email": owner_email,
        "amount": d.amount,
        "source": d.source,
    }
    wanted_entry = {
        "outcome": d.outcome,
        "reason": row.reason,
        "reason_category": row.reason_category,
        "competitor_id": competitor_id,
        "insight": row.insight,
        "logged_at": row.logged_at,
    }
    if entry is None:  # a deal the CRM sent that nobody had logged yet
        session.add(
            WinLossEntry(
                deal=deal,
                on_time=row.logged_at <= deal.deadline_at,
                author_user_id=d.owner_user_id,
                **wanted_entry,
            )
        )
        _apply(deal, wanted_deal)
        return "new"
    same = all(_equal(getattr(deal, k), v) for k, v in wanted_deal.items()) and all(
        _equal(getattr(entry, k), v) for k, v in wanted_entry.items()
    )
    if same:
        return "unchanged"
    session.add(wl_svc.snapshot(entry, by="import", now=now))
    _apply(deal, wanted_deal)
    _apply(entry, wanted_entry)
    entry.on_time = entry.logged_at <= deal.deadline_at
    entry.edit_count += 1
    entry.edited_at = now
    return "updated"


def find_deal(session: Session, deal_id: str) -> Deal | None:
    """A deal by its CRM ID, or by the ``slack-<n>`` ID an export gives a Slack-only deal."""
    deal = session.scalars(select(Deal).where(Deal.external_id == deal_id)).first()
    if deal is None and _slack_number(deal_id):
        candidate = session.get(Deal, int(deal_id[len(SLACK_PREFIX) :]))
        if candidate is not None and candidate.external_id is None:
            return candidate
    return deal


def _apply(obj: object, values: dict) -> None:
    for key, value in values.items():
        setattr(obj, key, value)


def _equal(a: object, b: object) -> bool:
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return (a is None and b is None) or (
            a is not None and b is not None and Decimal(str(a)) == Decimal(str(b))
        )
    return a == b


# --- export -------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""


def winloss_rows(session: Session, *, since: date | None = None) -> Iterator[list[str]]:
    """Every entry as a row of WINLOSS_COLUMNS, oldest close first."""
    query = (
        select(WinLossEntry)
        .join(WinLossEntry.deal)
        .options(joinedload(WinLossEntry.deal), joinedload(WinLossEntry.competitor))
        .order_by(Deal.closed_at, Deal.id)
    )
    if since is not None:
        query = query.where(Deal.closed_at >= datetime.combine(since, time(0), UTC))
    for entry in session.scalars(query).yield_per(1000):
        deal = entry.deal
        yield [
            deal.external_id or f"{SLACK_PREFIX}{deal.id}",
            deal.name,
            entry.outcome,
            _iso(deal.closed_at),
            _iso(entry.logged_at),
            entry.reason,
            entry.reason_category or "",
            entry.competitor.name if entry.competitor else "",
            entry.insight or "",
            "" if deal.amount is None else str(deal.amount),
            deal.source or "",
            deal.owner_user_id or deal.owner_email or "",
        ]


def feedback_rows(session: Session, *, since: date | None = None) -> Iterator[list[str]]:
    """Every weekly prompt with its answer and marketing's acknowledgements."""
    query = (
        select(Prompt)
        .options(joinedload(Prompt.answer))
        .order_by(Prompt.week_start, Prompt.user_id)
    )
    if since is not None:
        query = query.where(Prompt.week_start >= since)
    for prompt in session.scalars(query).yield_per(1000):
        answer: FeedbackAnswer | None = prompt.answer
        acks = []
        if answer is not None:
            post = session.scalars(
                select(LoopPost).where(
                    LoopPost.kind == PostKind.FEEDBACK, LoopPost.subject_id == answer.id
                )
            ).first()
            acks = list(post.acks) if post else []
        yield [
            prompt.week_start.isoformat(),
            prompt.user_id,
            prompt.status,
            prompt.skip_reason or "",
            answer.worked if answer else "",
            answer.fell_flat if answer else "",
            answer.insight if answer else "",
            (answer.campaign or "") if answer else "",
            _iso(prompt.answered_at),
            _iso(acks[0].created_at) if acks else "",
            " ".join(dict.fromkeys(a.user_id for a in acks)),
            " | ".join(a.note for a in acks if a.note),
        ]


def neutralise(cell: str) -> str:
    """``cell`` as text a spreadsheet will not run: a quote in front of a formula's first
    character, and in front of a quote that :func:`unquote` would otherwise take off."""
    if cell.startswith(FORMULA_START) or (
        cell.startswith(QUOTE) and cell[1:2] in (*FORMULA_START, QUOTE)
    ):
        return QUOTE + cell
    return cell


def unquote(cell: str) -> str:
    """The text :func:`neutralise` was given: one leading quote off when a formula character
    or another quote follows it; anything else as it is."""
    if cell.startswith(QUOTE) and cell[1:2] in (*FORMULA_START, QUOTE):
        return cell[1:]
    return cell


def write_csv(stream: IO[str], columns: Sequence[str], rows: Iterable[list[str]]) -> int:
    """Write ``columns`` and ``rows``, every cell neutralised; the number of rows written."""
    writer = csv.writer(stream, lineterminator="\n")
    # With "\n" as the line end, Python's csv leaves a lone "\r" unquoted, and every reader
    # (Python's included) ends the row there: a row holding one is written fully quoted.
    quoted = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(columns)
    count = 0
    for row in rows:
        cells = [neutralise(cell) for cell in row]
        (quoted if any("\r" in cell for cell in cells) else writer).writerow(cells)
        count += 1
    return count
