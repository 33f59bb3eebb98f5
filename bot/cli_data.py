"""``closeloop import`` and ``closeloop export``: win/loss history and leads in, as
Closeloop's own export or a CRM's (CSV or .xlsx, every problem of every row listed in one
pass), and the win/loss log, weekly feedback and leads out as spreadsheet-safe CSV."""

from __future__ import annotations

import csv
import sys
from argparse import Namespace
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

from bot.cli import SHOWN_SHORTHAND, fail, first_line
from bot.db import session_scope
from bot.runtime import Runtime
from bot.services import crm_formats, csvio, lead_formats, leadio, xlsx
from bot.services.errors import DomainError
from bot.services.winloss import reason_problem

T = TypeVar("T")


def _read_file(path: str, read: Callable[[Iterator[list[str]]], T]) -> T | int:
    """``read`` over the rows of a CSV (``,`` or ``;``) or the first sheet of an .xlsx; an
    exit status (2) after one line on stderr when the file cannot be read."""
    if path.lower().endswith((".xlsx", ".xlsm")):
        try:
            return read(xlsx.rows(path))
        except DomainError as err:
            return fail(f"{path}: {err}", 2)
        except Exception as err:  # openpyxl: a missing file, a zip that is not a workbook
            return fail(f"cannot read {path} as a spreadsheet: {first_line(err)}", 2)
    try:
        stream = open(path, encoding="utf-8-sig", newline="")
    except OSError as err:
        return fail(f"cannot open {path}: {err.strerror}", 2)
    with stream:
        try:
            return read(csvio.csv_lines(stream))
        except (DomainError, UnicodeDecodeError, csv.Error) as err:
            return fail(f"{path}: {err}", 2)


def _checked(args: Namespace, good: int, rejected: list[csvio.Rejected]) -> bool:
    """Print what the check found, every problem of every row, one line each (line,
    column, value, why); False when nothing may be imported."""
    problems = sum(len(bad.problems) for bad in rejected)
    print(
        f"checked {good + len(rejected)} rows: {good} good, {len(rejected)} rejected"
        + (f" ({problems} problems)" if rejected else ""),
        file=sys.stderr,
    )
    for bad in rejected:
        for problem in bad.problems:
            print(f"{args.file}:{bad.line}: rejected: {problem}", file=sys.stderr)
    if rejected and not args.skip_bad:
        fail(f"nothing imported: {len(rejected)} bad row(s); fix them or use --skip-bad", 1)
        return False
    return True


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on a terminal (stderr a TTY); plain ``imported N/M rows`` lines else."""
    bar = tqdm(total=total, unit="row", file=sys.stderr) if sys.stderr.isatty() else None

    def progress(done: int) -> None:
        if bar is not None:  # a terminal: a bar redrawn in place
            bar.update(done - bar.n)
        else:  # a log or a pipe: plain lines
            print(f"imported {done}/{total} rows", file=sys.stderr)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def import_(rt: Runtime, args: Namespace) -> int:
    if args.kind == "leads":
        return import_leads(rt, args)
    if getattr(args, "status", None) or getattr(args, "reason_map", None):
        return fail("--status and --reason-map are for import leads", 2)
    try:
        mapping = crm_formats.parse_mapping(getattr(args, "map", []))
        stages = crm_formats.parse_stages(getattr(args, "stage", []))
        owners = crm_formats.read_owners(args.owners) if getattr(args, "owners", None) else None
    except DomainError as err:
        return fail(str(err), 2)
    except OSError as err:
        return fail(f"cannot open {args.owners}: {err.strerror}", 2)

    def read(lines: Iterator[list[str]]) -> tuple[list, list]:
        return csvio.read_records(
            lines,
            categories=rt.settings.reason_categories,
            now=rt.now(),
            source=getattr(args, "source", None),
            mapping=mapping,
            date_format=getattr(args, "date_format", None),
            owners=owners,
            stages=stages,
        )

    read_back = _read_file(args.file, read)
    if isinstance(read_back, int):
        return read_back
    rows, rejected = read_back
    if not _checked(args, len(rows), rejected):
        return 1

    shorthand = [row for row in rows if reason_problem(row.reason)]
    for row in shorthand[:SHOWN_SHORTHAND]:  # history is kept as it is, but flagged
        print(
            f"{args.file}:{row.line}: flagged: reason {row.reason[:60]!r} is shorthand "
            "(a label or fewer than four words), not the customer's words",
            file=sys.stderr,
        )
    if len(shorthand) > SHOWN_SHORTHAND:
        print(f"... and {len(shorthand) - SHOWN_SHORTHAND} more shorthand reasons", file=sys.stderr)

    currency = rt.settings.currency
    foreign = [row for row in rows if row.currency and row.currency != currency]
    for row in foreign[:SHOWN_SHORTHAND]:  # stored as is, as the CRM hooks store it
        print(
            f"{args.file}:{row.line}: flagged: amount in {row.currency}, not CURRENCY "
            f"{currency}: stored as is (the digest adds amounts as {currency})",
            file=sys.stderr,
        )
    if len(foreign) > SHOWN_SHORTHAND:
        print(
            f"... and {len(foreign) - SHOWN_SHORTHAND} more amounts in another currency",
            file=sys.stderr,
        )

    with _progress(len(rows)) as progress, session_scope(rt.session_factory) as session:
        result = csvio.import_winloss(
            session,
            rows,
            deadline_hours=rt.settings.winloss_deadline_hours,
            now=rt.now(),
            progress=progress,
        )
    print(
        f"imported {len(rows)} rows: {result.new} new, {result.updated} updated, "
        f"{result.unchanged} unchanged"
        + (f"; {len(rejected)} skipped" if rejected else "")
        + (f"; {len(shorthand)} shorthand reason(s) flagged" if shorthand else "")
        + (f"; {len(foreign)} amount(s) in another currency flagged" if foreign else "")
    )
    return 0


def import_leads(rt: Runtime, args: Namespace) -> int:
    """``closeloop import leads FILE``: lead history (and ratings) from Closeloop's export or
    a CRM's; checked in one pass, then written in one transaction; nobody is asked about
    an imported lead (see bot.services.leadio)."""
    if getattr(args, "stage", None):
        return fail("--stage is for import winloss; a lead's status takes --status", 2)
    s = rt.settings.leads
    try:
        mapping = lead_formats.parse_mapping(args.map)
        statuses = lead_formats.parse_statuses(args.status)
        reasons = lead_formats.parse_reason_map(args.reason_map, reasons=s.reject_reasons)
        owners = crm_formats.read_owners(args.owners) if args.owners else None
    except DomainError as err:
        return fail(str(err), 2)
    except OSError as err:
        return fail(f"cannot open {args.owners}: {err.strerror}", 2)

    def read(lines: Iterator[list[str]]) -> tuple[list, list]:
        return leadio.read_leads(
            lines,
            reasons=s.reject_reasons,
            now=rt.now(),
            source=args.source,
            mapping=mapping,
            statuses=statuses,
            reason_map=reasons,
            date_format=args.date_format,
            owners=owners,
        )

    read_back = _read_file(args.file, read)
    if isinstance(read_back, int):
        return read_back
    rows, rejected = read_back
    if not _checked(args, len(rows), rejected):
        return 1
    with _progress(len(rows)) as progress, session_scope(rt.session_factory) as session:
        result = leadio.import_leads(
            session,
            rows,
            s=s,
            default_tz=rt.settings.default_timezone,
            now=rt.now(),
            progress=progress,
        )
    print(
        f"imported {len(rows)} leads: {result.new} new ({result.rated} with a rating), "
        f"{result.known} already held (left as they are)"
        + (f"; {len(rejected)} skipped" if rejected else "")
        + (f"; {result.unreasoned} rejection(s) without a reason" if result.unreasoned else "")
        + "; nobody is asked about imported leads"
    )
    return 0


def export(rt: Runtime, args: Namespace) -> int:
    columns: Sequence[str]
    rows: Callable[..., Iterator[list[str]]]
    if args.kind == "leads":
        columns, rows = (
            (leadio.RATING_COLUMNS, leadio.rating_rows)
            if getattr(args, "ratings", False)
            else (leadio.LEAD_COLUMNS, leadio.lead_rows)
        )
    elif args.kind == "winloss":
        columns, rows = csvio.WINLOSS_COLUMNS, csvio.winloss_rows
    else:
        columns, rows = csvio.FEEDBACK_COLUMNS, csvio.feedback_rows
    if getattr(args, "ratings", False) and args.kind != "leads":
        return fail("--ratings is for export leads", 2)
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    try:
        with session_scope(rt.session_factory) as session:
            count = csvio.write_csv(out, columns, rows(session, since=args.since))
    finally:
        if args.output:
            out.close()
    print(f"exported {count} rows", file=sys.stderr)
    return 0
