"""What each CRM's lead or contact export calls Closeloop's lead columns, and what its
statuses mean as a rating.

``closeloop import leads FILE --from salesforce|hubspot|pipedrive|closeloop`` reads a Salesforce
Leads report, a HubSpot contacts export, a Pipedrive leads export or Closeloop's own
``closeloop export leads``. :func:`layout` picks the columns (or says which are missing);
:meth:`LeadLayout.translate` turns one row into Closeloop's own columns for
:func:`bot.services.leadio.read_leads` to check. Cells are read as the win/loss import reads
them (dates, owners by name: :mod:`bot.services.crm_formats`).

A field may have several candidate columns; the first of them present in the file with a
value in the row wins, so a HubSpot contact without a "Became a Marketing Qualified Lead
Date" falls back to its "Create Date".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.models import LeadStatus
from bot.services import crm_formats
from bot.services.crm_formats import parse_date_cell, salesforce_id18
from bot.services.errors import DomainError

# Closeloop's lead fields a column can be mapped to (``--map FIELD=COLUMN``).
FIELDS = (
    "lead_id",
    "person",
    "first_name",
    "last_name",
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
    "stage",
    "reason",
    "note",
    "rated_by",
    "rated_at",
    "rated_definition_version",
    "first_response_at",
)
DATE_FIELDS = ("handed_at", "sla_due_at", "rated_at", "first_response_at")
NEW = LeadStatus.NEW.value
ACCEPTED = LeadStatus.ACCEPTED.value
NOT_READY = LeadStatus.NOT_READY.value
REJECTED = LeadStatus.REJECTED.value
RATINGS = (NEW, ACCEPTED, NOT_READY, REJECTED)
_SLACK_ID = re.compile(r"^[UW][A-Z0-9]+$")


@dataclass(frozen=True)
class LeadProfile:
    """One export: candidate columns per field, the fields it must have, and what its
    statuses (and, as a fallback, its stages) mean as a rating (``new``: not rated)."""

    name: str
    columns: Mapping[str, Sequence[str]]
    required: Sequence[str]
    statuses: Mapping[str, str] = field(default_factory=dict)
    prefix: str = ""  # the external ID's prefix, as the CRM's hook stores it


_OWN_STATUSES = {
    "new": NEW,
    "accepted": ACCEPTED,
    "not_ready": NOT_READY,
    "not ready": NOT_READY,
    "rejected": REJECTED,
}
CLOSELOOP = LeadProfile(
    "closeloop",
    {
        name: (name,)
        for name in FIELDS
        if name not in ("first_name", "last_name", "stage")  # Closeloop writes `person`
    },
    ("lead_id", "person", "owner", "handed_at"),
    _OWN_STATUSES,
)
# help.salesforce.com "Lead Fields": Lead Owner, First Name, Last Name, Company, Title, Email,
# Lead Source, Lead Status, Create Date; a Leads report labels the company "Company /
# Account" and shows "Lead ID" when it is added as a column. The standard Lead Status
# picklist is "Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed -
# Not Converted"; newer orgs ship "New", "Working", "Nurturing", "Qualified", "Unqualified".
SALESFORCE = LeadProfile(
    "salesforce",
    {
        "lead_id": ("Lead ID", "Lead Id"),
        "person": ("Full Name", "Name"),
        "first_name": ("First Name",),
        "last_name": ("Last Name",),
        "email": ("Email",),
        "company": ("Company / Account", "Company"),
        "title": ("Title",),
        "source": ("Lead Source",),
        "campaign": ("Campaign Name", "Primary Campaign Source"),
        "context": ("Description",),
        "owner": ("Lead Owner Email", "Lead Owner"),
        "handed_at": ("Create Date", "Created Date"),
        "status": ("Lead Status", "Status"),
        "reason": ("Unqualified Reason", "Disqualified Reason"),
        "rated_at": ("Converted Date",),
    },
    ("lead_id", "person", "owner", "handed_at"),
    {
        "open - not contacted": NEW,
        "working - contacted": NEW,
        "new": NEW,
        "open": NEW,
        "working": NEW,
        "contacted": NEW,
        "closed - converted": ACCEPTED,
        "converted": ACCEPTED,
        "qualified": ACCEPTED,
        "closed - not converted": REJECTED,
        "unqualified": REJECTED,
        "nurturing": NOT_READY,
        "nurture": NOT_READY,
        "recycled": NOT_READY,
    },
    "salesforce:",
)
# knowledge.hubspot.com "HubSpot's default contact properties": First Name, Last Name, Email,
# Company Name, Job Title, Lifecycle Stage, Lead Status, Contact owner, Original Source,
# Create Date, "Became a Marketing Qualified Lead Date", "Became a Sales Qualified Lead
# Date"; every export adds Record ID. Lead Status (New, Open, In Progress, Open Deal,
# Unqualified, Attempted to Contact, Connected, Bad Timing) says more than the lifecycle
# stage, so it is read first; the stage decides when the status says nothing.
HUBSPOT = LeadProfile(
    "hubspot",
    {
        "lead_id": ("Record ID", "Contact ID"),
        "first_name": ("First Name",),
        "last_name": ("Last Name",),
        "email": ("Email",),
        "company": ("Company Name", "Associated Company"),
        "title": ("Job Title",),
        "source": ("Original Source", "Original Traffic Source", "Latest Source"),
        "owner": ("Contact owner", "Contact Owner", "HubSpot Owner"),
        "handed_at": ("Became a Marketing Qualified Lead Date", "Create Date"),
        "status": ("Lead Status",),
        "stage": ("Lifecycle Stage",),
        "rated_at": ("Became a Sales Qualified Lead Date", "Became an Opportunity Date"),
    },
    ("lead_id", "last_name", "owner", "handed_at"),
    {
        # Lead Status
        "new": NEW,
        "open": NEW,
        "in progress": NEW,
        "attempted to contact": NEW,
        "connected": NEW,
        "open deal": ACCEPTED,
        "unqualified": REJECTED,
        "bad timing": NOT_READY,
        # Lifecycle Stage, as the export labels it and as its internal value
        "subscriber": NEW,
        "lead": NEW,
        "marketing qualified lead": NEW,
        "marketingqualifiedlead": NEW,
        "other": NEW,
        "sales qualified lead": ACCEPTED,
        "salesqualifiedlead": ACCEPTED,
        "opportunity": ACCEPTED,
        "customer": ACCEPTED,
        "evangelist": ACCEPTED,
    },
    "hubspot:contact:",
)
# Pipedrive's export names each column "<Entity> - <Field>": Lead - Title, Lead - Owner,
# Lead - Source, Lead - Labels, Lead - Lead created, with the linked Person - Name, Person -
# Email and Organization - Name. A Pipedrive lead has no status that is a rating (a lead
# that qualified was converted to a deal and left the Leads Inbox): its leads import
# unrated unless a column is mapped (--map status=COLUMN, --status VALUE=RATING).
PIPEDRIVE = LeadProfile(
    "pipedrive",
    {
        "lead_id": ("Lead - ID",),
        "person": ("Person - Name", "Lead - Title"),
        "email": ("Person - Email",),
        "company": ("Organization - Name",),
        "title": ("Person - Job title",),
        "source": ("Lead - Source", "Lead - Source origin"),
        "campaign": ("Lead - Source channel",),
        "owner": ("Lead - Owner",),
        "handed_at": ("Lead - Lead created", "Lead - Add time"),
        "status": ("Lead - Status",),
    },
    ("lead_id", "person", "owner", "handed_at"),
    {"open": NEW, "new": NEW},
    "pipedrive:lead:",
)
PROFILES = {p.name: p for p in (CLOSELOOP, SALESFORCE, HUBSPOT, PIPEDRIVE)}


@dataclass(frozen=True)
class CellProblem:
    field: str
    why: str


@dataclass(frozen=True)
class LeadLayout:
    """Which columns of this file hold each field (present ones, in order of preference)."""

    profile: LeadProfile
    columns: Mapping[str, Sequence[str]]
    statuses: Mapping[str, str] = field(default_factory=dict)  # --status: casefold -> rating
    reasons: Mapping[str, str] = field(default_factory=dict)  # --reason-map: casefold -> reason

    def label(self, name: str) -> str:
        """The file's column for a field, as a problem should name it."""
        if name == "person" and "person" not in self.columns:
            return (self.columns.get("last_name") or self.columns.get("first_name") or [name])[0]
        if name == "status" and "status" not in self.columns:
            return (self.columns.get("stage") or [name])[0]
        return (self.columns.get(name) or [name])[0]

    def cell(self, record: Mapping[str, str], name: str) -> tuple[str, str]:
        """(column, value): the first of the field's columns with a value in this row."""
        columns = self.columns.get(name) or ()
        for column in columns:
            value = record.get(column, "")
            if value:
                return column, value
        return (columns[0] if columns else name), ""

    def external_id(self, lead_id: str) -> str:
        """A CRM's lead ID as its hook stores it (``hubspot:contact:51``), so a lead imported
        as history and later reported by the hook is one lead, never asked about again;
        Closeloop's own export keeps its IDs as they are."""
        lead_id = lead_id.strip()
        prefix = self.profile.prefix
        if not prefix or not lead_id or lead_id.startswith(prefix):
            return lead_id
        if self.profile is SALESFORCE:
            lead_id = salesforce_id18(lead_id)
        return prefix + lead_id

    def rating(self, record: Mapping[str, str]) -> tuple[str, str, str | None]:
        """(rating, the column it came from, why it is refused or None): the status when it
        is a rating, else the stage's (HubSpot's lifecycle stage), else not rated."""
        verdict: tuple[str, str, str | None] = (NEW, self.label("status"), None)
        for name in ("status", "stage"):
            column, value = self.cell(record, name)
            if not value:
                continue
            key = value.strip().casefold()
            rating = self.statuses.get(key) or self.profile.statuses.get(key)
            if rating is None:
                why = (
                    f"is not a {self.profile.name} status Closeloop knows: give "
                    f"--status '{value.strip()}=RATING' (accepted, not_ready, rejected or new)"
                )
                return NEW, column, why
            if rating != NEW:
                return rating, column, None
            verdict = (NEW, column, None)
        return verdict

    def translate(
        self,
        record: Mapping[str, str],
        *,
        date_format: str | None,
        owners: Mapping[str, str] | None,
    ) -> tuple[dict[str, str], list[CellProblem]]:
        """One row of the file as Closeloop's columns, and the problems found doing so."""
        out: dict[str, str] = {}
        problems: list[CellProblem] = []
        for name in FIELDS:
            out[name] = self.cell(record, name)[1]
        out["lead_id"] = self.external_id(out["lead_id"])
        if not out["person"]:
            out["person"] = " ".join(p for p in (out["first_name"], out["last_name"]) if p)
        rating, _, why = self.rating(record)
        if why is not None:
            problems.append(CellProblem("status", why))
        out["status"] = rating
        for name in DATE_FIELDS:
            try:
                out[name] = parse_date_cell(out[name], date_format=date_format)
            except DomainError as err:
                problems.append(CellProblem(name, str(err)))
                out[name] = ""
        reason = out["reason"].strip()
        if reason:
            out["reason"] = self.reasons.get(reason.casefold(), reason)
        elif rating == REJECTED:  # no reason column: --reason-map may name the status's
            said = self.cell(record, "status")[1].strip().casefold()
            out["reason"] = self.reasons.get(said, "")
        owner = out["owner"].strip()
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


def parse_statuses(pairs: Sequence[str]) -> dict[str, str]:
    """``--status "Disqualified=rejected"`` options as {status, casefolded: rating}."""
    statuses: dict[str, str] = {}
    for pair in pairs:
        name, sep, rating = pair.rpartition("=")
        name, rating = name.strip().strip('"'), rating.strip().lower().replace(" ", "_")
        if not sep or not name or rating not in RATINGS:
            raise DomainError(
                f"--status {pair!r}: write it as STATUS=RATING, the rating one of "
                f'{", ".join(RATINGS)} (e.g. "Disqualified=rejected")'
            )
        statuses[name.casefold()] = rating
    return statuses


def parse_reason_map(pairs: Sequence[str], *, reasons: Sequence[str]) -> dict[str, str]:
    """``--reason-map "No budget=Bad fit: no budget"`` options as {text, casefolded: the
    taxonomy's reason}; a reason not in the taxonomy (LEAD_REJECT_REASONS) is refused."""
    by_casefold = {r.casefold(): r for r in reasons}
    mapped: dict[str, str] = {}
    for pair in pairs:
        text, sep, reason = pair.rpartition("=")
        text, reason = text.strip().strip('"'), reason.strip().strip('"')
        if not sep or not text or reason.casefold() not in by_casefold:
            raise DomainError(
                f"--reason-map {pair!r}: write it as TEXT=REASON, the reason one of "
                f"LEAD_REJECT_REASONS: {', '.join(reasons)}"
            )
        mapped[text.casefold()] = by_casefold[reason.casefold()]
    return mapped


def parse_mapping(pairs: Sequence[str]) -> dict[str, str]:
    """``--map field=Column Name`` options as {field: column}, the fields a lead has."""
    return crm_formats.parse_mapping(pairs, fields=FIELDS)


def _columns(
    profile: LeadProfile, header: Sequence[str], mapping: Mapping[str, str]
) -> dict[str, list[str]]:
    present = set(header)
    columns = {
        name: [c for c in candidates if c in present]
        for name, candidates in profile.columns.items()
    }
    for name, column in mapping.items():
        columns[name] = [column]
    return {name: found for name, found in columns.items() if found}


def _missing(profile: LeadProfile, columns: Mapping[str, Sequence[str]]) -> list[str]:
    missing = [name for name in profile.required if name not in columns]
    if "person" in missing and ("last_name" in columns or "first_name" in columns):
        missing.remove("person")
    if "last_name" in missing and ("person" in columns or "first_name" in columns):
        missing.remove("last_name")
    return missing


def layout(
    header: Sequence[str],
    *,
    source: str | None = None,
    mapping: Mapping[str, str] | None = None,
    statuses: Mapping[str, str] | None = None,
    reasons: Mapping[str, str] | None = None,
) -> LeadLayout:
    """The columns of a file whose first line is ``header``: from the named export's profile,
    or (no ``source``) the profile the header matches best. DomainError lists what the file
    has and what it needs."""
    mapping = mapping or {}
    crm_formats.check_mapped(mapping, header)
    candidates = crm_formats.likeliest(PROFILES, header, source=source)
    for profile in candidates:
        columns = _columns(profile, header, mapping)
        if not _missing(profile, columns):
            return LeadLayout(profile, columns, dict(statuses or {}), dict(reasons or {}))
    best = candidates[0]
    missing = _missing(best, _columns(best, header, mapping))
    needs = ", ".join(
        " or ".join(repr(c) for c in best.columns.get(name, (name,))) for name in missing
    )
    who = f"a {best.name} leads export" if source else "a leads export Closeloop knows"
    raise DomainError(
        f"this is not {who}: its columns are {', '.join(header) or '(none)'}; "
        f"{best.name} needs {needs}. Name the export with "
        "--from salesforce|hubspot|pipedrive|closeloop, or a column with --map FIELD=COLUMN"
    )
