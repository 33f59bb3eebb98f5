"""What each CRM's deal export calls Closeloop's columns, and how its cells are written.

``closeloop import winloss FILE --from salesforce|hubspot|pipedrive|closeloop`` reads an
export as the CRM writes it: its column names (a :class:`Profile`), its stage names (mapped to
won, lost or no_decision), its dates (``11/20/2026``, ``20.11.2026``, ISO 8601), its money
(``$12,500.00``, ``12.500,00 €``) and owners given by name (looked up in an owners file).
:func:`layout` picks the columns (or says which are missing); :meth:`Layout.translate` turns
one row into Closeloop's own columns for :func:`bot.services.csvio.read_winloss` to check.

Column names come from each CRM's documentation (sources in tests/crm_samples/README.md).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from bot.services.errors import DomainError

# Closeloop's fields a column can be mapped to (``--map FIELD=COLUMN``). ``reason`` is one
# column; a CRM with separate lost and won reasons gives ``lost_reason`` and ``won_reason``,
# and ``lost_closed_at`` / ``won_closed_at`` when it keeps the two times apart (Pipedrive).
FIELDS = (
    "deal_id",
    "deal_name",
    "outcome",
    "closed_at",
    "won_closed_at",
    "lost_closed_at",
    "logged_at",
    "reason",
    "lost_reason",
    "won_reason",
    "reason_category",
    "competitor",
    "insight",
    "amount",
    "currency",
    "source",
    "owner",
)
OPEN = "open"  # a stage that is not closed: the row is refused (filter the export to closed)


@dataclass(frozen=True)
class Profile:
    """One CRM's export: candidate column names per field, the fields it must have, and its
    closed stages."""

    name: str
    columns: Mapping[str, Sequence[str]]
    required: Sequence[str]
    stages: Mapping[str, str] = field(default_factory=dict)


CLOSELOOP = Profile(
    "closeloop",
    {name: (name,) for name in FIELDS if "_closed_at" not in name and "_reason" not in name},
    ("deal_id", "deal_name", "outcome", "closed_at", "reason", "owner"),
)
# help.salesforce.com "Opportunity Fields": Opportunity Name, Stage, Close Date, Amount,
# Opportunity Owner, Account Name; "Closed Won" and "Closed Lost" are the standard closed
# stages. A report export shows the fields' labels; Loss Reason is a common custom field.
SALESFORCE = Profile(
    "salesforce",
    {
        "deal_id": ("Opportunity ID", "Opportunity Id"),
        "deal_name": ("Opportunity Name",),
        "outcome": ("Stage",),
        "closed_at": ("Close Date",),
        "amount": ("Amount",),
        "currency": ("Opportunity Currency", "Amount Currency"),
        "owner": ("Opportunity Owner Email", "Owner Email", "Opportunity Owner"),
        "reason": ("Loss Reason", "Closed Lost Reason", "Win/Loss Reason"),
        "won_reason": ("Win Reason", "Closed Won Reason"),
        "competitor": ("Main Competitor(s)", "Main Competitors", "Competitor"),
        "source": ("Lead Source", "Primary Campaign Source"),
        "insight": ("Next Step",),
    },
    ("deal_id", "deal_name", "outcome", "closed_at", "owner"),
    {"closed won": "won", "closed lost": "lost"},
)
# knowledge.hubspot.com "HubSpot's default deal properties": Deal Name, Deal Stage, Close
# Date, Amount, Deal owner, Closed Lost Reason, Closed Won Reason; an export adds Record ID.
HUBSPOT = Profile(
    "hubspot",
    {
        "deal_id": ("Record ID", "Deal ID"),
        "deal_name": ("Deal Name",),
        "outcome": ("Deal Stage",),
        "closed_at": ("Close Date",),
        "amount": ("Amount",),
        "currency": ("Currency", "Deal Currency Code"),
        "owner": ("Deal owner", "Deal Owner"),
        "lost_reason": ("Closed Lost Reason",),
        "won_reason": ("Closed Won Reason",),
        "competitor": ("Competitor",),
        "source": ("Original Source Type", "Original Traffic Source"),
    },
    ("deal_id", "deal_name", "outcome", "closed_at", "owner"),
    {
        "closed won": "won",
        "closed lost": "lost",
        "closedwon": "won",
        "closedlost": "lost",
    },
)
# Pipedrive's export names each column "<Entity> - <Field>": Deal - Title, Deal - Status
# (open, won, lost), Deal - Value, Deal - Currency, Deal - Owner, Deal - Lost reason,
# Deal - Won time, Deal - Lost time, Deal - Expected close date.
PIPEDRIVE = Profile(
    "pipedrive",
    {
        "deal_id": ("Deal - ID",),
        "deal_name": ("Deal - Title",),
        "outcome": ("Deal - Status",),
        "won_closed_at": ("Deal - Won time",),
        "lost_closed_at": ("Deal - Lost time",),
        "closed_at": ("Deal - Close date", "Deal - Expected close date"),
        "amount": ("Deal - Value",),
        "currency": ("Deal - Currency",),
        "owner": ("Deal - Owner",),
        "lost_reason": ("Deal - Lost reason",),
        "competitor": ("Deal - Competitor",),
        "source": ("Deal - Source", "Deal - Source origin"),
    },
    ("deal_id", "deal_name", "outcome", "owner"),
    {"won": "won", "lost": "lost", "open": OPEN, "deleted": OPEN},
)
PROFILES = {p.name: p for p in (CLOSELOOP, SALESFORCE, HUBSPOT, PIPEDRIVE)}

_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([ T].*)?")
_DAY_FIRST_DOTS = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})(?:,?\s+(\d{1,2}:\d{2}(?::\d{2})?))?")
_SLASHES = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{4})(?:,?\s+(\d{1,2}:\d{2}(?::\d{2})?)(?:\s*([AaPp][Mm]))?)?"
)
_SLACK_ID = re.compile(r"^[UW][A-Z0-9]+$")


_SALESFORCE_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def salesforce_id18(record_id: str) -> str:
    """A Salesforce record ID in its 18-character form, whichever form it came in.

    Reports show the 15-character, case-sensitive ID; the API and Outbound Messages send 18
    characters: the same 15 and a 3-character checksum of their capital letters (each group
    of five gives a bit per capital, read from the right, as one of 32 characters). Stored
    one way, a deal imported from a report and later sent by Salesforce is one deal."""
    if len(record_id) != 15 or not record_id.isalnum():
        return record_id
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, c in enumerate(record_id[start : start + 5]) if "A" <= c <= "Z")
        suffix += _SALESFORCE_SUFFIX[bits]
    return record_id + suffix


@dataclass(frozen=True)
class CellProblem:
    field: str
    why: str


def parse_date_cell(text: str, *, date_format: str | None) -> str:
    """``text`` as ISO 8601 (``2026-11-20`` or ``2026-11-20T15:30:00``); DomainError says why
    not. ``11/20/2026`` is month first, ``20/11/2026`` day first, ``03/04/2026`` ambiguous
    without ``date_format`` (strptime's, e.g. ``%d/%m/%Y``, tried first); ``20.11.2026`` is
    day first."""
    text = text.strip()
    if not text or _ISO.fullmatch(text):
        return text
    if date_format:
        for fmt in (date_format, f"{date_format} %H:%M", f"{date_format} %H:%M:%S"):
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            return (
                parsed.isoformat() if parsed.time() != datetime.min.time() else str(parsed.date())
            )
    if m := _DAY_FIRST_DOTS.fullmatch(text):
        day, month, year, clock = m.groups()
        return _iso(int(year), int(month), int(day), clock, None)
    if m := _SLASHES.fullmatch(text):
        first, second, year, clock, half = m.groups()
        a, b = int(first), int(second)
        if a > 12 and b <= 12:
            return _iso(int(year), b, a, clock, half)
        if a <= 12 and (b > 12 or a == b):
            return _iso(int(year), a, b, clock, half)
        if a <= 12 and b <= 12:
            raise DomainError(
                "could be month/day or day/month: give --date-format %m/%d/%Y or %d/%m/%Y"
            )
    raise DomainError("is not a date (e.g. 2026-11-20, 11/20/2026 or 20.11.2026)")


def _iso(year: int, month: int, day: int, clock: str | None, half: str | None) -> str:
    try:
        if not clock:
            return datetime(year, month, day).date().isoformat()
        hour, minute, *rest = (int(part) for part in clock.split(":"))
        if half:
            hour = hour % 12 + (12 if half.lower() == "pm" else 0)
        return datetime(year, month, day, hour, minute, rest[0] if rest else 0).isoformat()
    except ValueError as err:
        raise DomainError(f"is not a date ({err})") from None


_MONEY_NOISE = re.compile(r"[^\d.,\-]")


def parse_money_cell(text: str) -> str:
    """``$12,500.00``, ``12.500,00 €``, ``USD 12 500`` as ``12500.00``-style text; a cell with
    no digits is returned as it is (for the amount check to name)."""
    text = text.strip()
    digits = _MONEY_NOISE.sub("", text)
    if not text or not re.search(r"\d", digits):
        return text
    if "," in digits and "." in digits:
        decimal = "," if digits.rfind(",") > digits.rfind(".") else "."
    elif "," in digits:
        decimal = "." if re.fullmatch(r"-?\d{1,3}(,\d{3})+", digits) else ","
    else:
        decimal = "."
    thousands = "," if decimal == "." else "."
    return digits.replace(thousands, "").replace(decimal, ".")


def read_owners(path: str) -> dict[str, str]:
    """An owners file: ``name,email`` or ``name,slack_id`` lines (a header line is allowed),
    keyed by the name in any case."""
    owners: dict[str, str] = {}
    with open(path, encoding="utf-8-sig", newline="") as stream:
        for row in csv.reader(stream):
            if len(row) < 2 or not row[0].strip():
                continue
            name, who = row[0].strip(), row[1].strip()
            if name.casefold() in ("name", "owner") and not ("@" in who or _SLACK_ID.match(who)):
                continue  # the header
            owners[name.casefold()] = who
    return owners


@dataclass(frozen=True)
class Layout:
    """Which column of this file holds each field."""

    profile: Profile
    columns: Mapping[str, str]
    stages: Mapping[str, str] = field(default_factory=dict)  # --stage: casefold name -> outcome

    def label(self, name: str) -> str:
        """The file's column for a field, as a problem should name it."""
        if name == "reason" and "reason" not in self.columns:
            return self.columns.get("lost_reason") or self.columns.get("won_reason") or name
        if name == "closed_at" and "closed_at" not in self.columns:
            return self.columns.get("won_closed_at") or self.columns.get("lost_closed_at") or name
        return self.columns.get(name, name)

    def external_id(self, deal_id: str) -> str:
        """A CRM's deal ID as its webhook stores it (``hubspot:1234``), so a deal imported
        from an export and later heard of through the CRM's hook (or the daily sync) is one
        deal, never nudged again; Closeloop's own export keeps its IDs as they are."""
        deal_id = deal_id.strip()
        if self.profile is CLOSELOOP or not deal_id or deal_id.startswith(f"{self.profile.name}:"):
            return deal_id
        if self.profile is SALESFORCE:
            deal_id = salesforce_id18(deal_id)
        return f"{self.profile.name}:{deal_id}"

    def translate(
        self,
        record: Mapping[str, str],
        *,
        date_format: str | None,
        owners: Mapping[str, str] | None,
    ) -> tuple[dict[str, str], list[CellProblem]]:
        """One row of the file as Closeloop's columns, and the problems found doing so."""
        cells = {name: record.get(column, "") for name, column in self.columns.items()}
        out: dict[str, str] = {}
        problems: list[CellProblem] = []
        for name in ("deal_id", "deal_name", "reason_category", "competitor", "insight"):
            out[name] = cells.get(name, "")
        out["deal_id"] = self.external_id(out["deal_id"])
        out["source"] = cells.get("source", "")
        stage = cells.get("outcome", "")
        key = stage.strip().casefold()
        outcome = self.stages.get(key) or self.profile.stages.get(key, stage)
        if outcome == OPEN:
            problems.append(CellProblem("outcome", "is not a closed stage (won or lost)"))
            outcome = ""
        out["outcome"] = outcome
        closed = cells.get("closed_at", "")
        kind = outcome.strip().casefold()
        if kind == "won" and cells.get("won_closed_at"):
            closed = cells["won_closed_at"]
        elif kind == "lost" and cells.get("lost_closed_at"):
            closed = cells["lost_closed_at"]
        for name, value in (("closed_at", closed), ("logged_at", cells.get("logged_at", ""))):
            try:
                out[name] = parse_date_cell(value, date_format=date_format)
            except DomainError as err:
                problems.append(CellProblem(name, str(err)))
                out[name] = ""
        if not out["logged_at"]:  # history: an entry logged when the deal closed
            out["logged_at"] = out["closed_at"]
        reason = cells.get("reason", "")
        if not reason:
            won, lost = cells.get("won_reason", ""), cells.get("lost_reason", "")
            reason = (won or lost) if kind == "won" else (lost or won)
        out["reason"] = reason
        out["amount"] = parse_money_cell(cells.get("amount", ""))
        out["currency"] = cells.get("currency", "").strip().upper()
        owner = cells.get("owner", "").strip()
        if owner and "@" not in owner and not _SLACK_ID.match(owner):
            if owners is not None and owner.casefold() in owners:
                owner = owners[owner.casefold()]
            elif owners is not None:
                problems.append(CellProblem("owner", "is not in the --owners file"))
            elif self.profile is not CLOSELOOP:
                problems.append(
                    CellProblem("owner", "is a name: give --owners FILE (lines of name,email)")
                )
        out["owner"] = owner
        return out, problems


STAGE_OUTCOMES = ("won", "lost", "no_decision", OPEN)


def parse_stages(pairs: Sequence[str]) -> dict[str, str]:
    """``--stage "Closed - No Budget=lost"`` options as {stage name, casefolded: outcome}: a
    pipeline's own stage names, beside the standard ones each CRM profile knows."""
    stages: dict[str, str] = {}
    for pair in pairs:
        name, sep, outcome = pair.rpartition("=")
        name, outcome = name.strip().strip('"'), outcome.strip().lower()
        if not sep or not name or outcome not in STAGE_OUTCOMES:
            raise DomainError(
                f"--stage {pair!r}: write it as STAGE=OUTCOME, the outcome one of "
                f'{", ".join(STAGE_OUTCOMES)} (e.g. "Closed - No Budget=lost")'
            )
        stages[name.casefold()] = outcome
    return stages


def parse_mapping(pairs: Sequence[str], *, fields: Sequence[str] = FIELDS) -> dict[str, str]:
    """``--map field=Column Name`` options as {field: column}, each one of ``fields`` (a deal's
    by default; bot.services.lead_formats passes a lead's)."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        name, column = name.strip(), column.strip().strip('"')
        if not sep or not column:
            raise DomainError(f"--map {pair!r}: write it as FIELD=COLUMN, e.g. reason=Notes")
        if name not in fields:
            raise DomainError(f"--map {pair!r}: {name!r} is not one of {', '.join(fields)}")
        mapping[name] = column
    return mapping


def _columns(profile: Profile, header: Sequence[str], mapping: Mapping[str, str]) -> dict:
    present = set(header)
    found = {
        name: next((c for c in candidates if c in present), None)
        for name, candidates in profile.columns.items()
    }
    columns = {name: column for name, column in found.items() if column}
    for name, column in mapping.items():
        if column in present:
            columns[name] = column
    return columns


def _missing(profile: Profile, columns: Mapping[str, str]) -> list[str]:
    missing = [name for name in profile.required if name not in columns]
    if profile is PIPEDRIVE and not (
        {"closed_at", "won_closed_at", "lost_closed_at"} & set(columns)
    ):
        missing.append("closed_at")
    return missing


def _needs(profile: Profile, missing: Sequence[str]) -> str:
    return ", ".join(
        " or ".join(repr(c) for c in profile.columns.get(name, (name,))) for name in missing
    )


def check_mapped(mapping: Mapping[str, str], header: Sequence[str]) -> None:
    """DomainError when a ``--map`` names a column the file does not have."""
    missing = [f"{name}={column!r}" for name, column in mapping.items() if column not in header]
    if missing:
        raise DomainError(
            f"--map names no column of this file: {', '.join(missing)} "
            f"(its columns: {', '.join(header)})"
        )


P = TypeVar("P", bound="HasColumns")


class HasColumns(Protocol):
    @property
    def columns(self) -> Mapping[str, Sequence[str]]: ...


def likeliest(profiles: Mapping[str, P], header: Sequence[str], *, source: str | None) -> list[P]:
    """The named profile, or every profile, the ones sharing most columns with ``header``
    first (a deal export's profiles here, a lead export's in bot.services.lead_formats)."""
    if source is not None:
        return [profiles[source]]
    return sorted(
        profiles.values(),
        key=lambda p: -sum(1 for c in p.columns.values() if set(c) & set(header)),
    )


def layout(
    header: Sequence[str],
    *,
    source: str | None = None,
    mapping: Mapping[str, str] | None = None,
    stages: Mapping[str, str] | None = None,
) -> Layout:
    """The columns of a file whose first line is ``header``: from the named CRM's profile, or
    (no ``source``) the profile the header matches best. DomainError lists what the file has
    and what it needs."""
    mapping = mapping or {}
    check_mapped(mapping, header)
    candidates = likeliest(PROFILES, header, source=source)
    best = candidates[0]
    for profile in candidates:
        columns = _columns(profile, header, mapping)
        if not _missing(profile, columns):
            return Layout(profile, columns, dict(stages or {}))
    columns = _columns(best, header, mapping)
    missing = _missing(best, columns)
    if best is CLOSELOOP and source is None and set(header) & set(FIELDS):
        raise DomainError(
            f"the CSV has no column {', '.join(missing)} (line 1 is the header; "
            f"its columns: {', '.join(header)})"
        )
    who = f"a {best.name} export" if source else "an export Closeloop knows"
    raise DomainError(
        f"this is not {who}: its columns are {', '.join(header) or '(none)'}; "
        f"{best.name} needs {_needs(best, missing)}. "
        "Name the CRM with --from salesforce|hubspot|pipedrive|closeloop, or a column with "
        "--map FIELD=COLUMN"
    )
