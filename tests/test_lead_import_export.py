"""``closeloop export leads`` and ``closeloop import leads``, run as an operator would, on the
suite's database(s): the round trip, each CRM's lead export (tests/crm_samples), every problem
in one pass, --skip-bad, and spreadsheet-safe cells."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bot.config_leads import LeadSettings
from bot.db import session_scope
from bot.models import Lead, LeadDefinition, LeadRating
from bot.services import leads as lead_svc
from bot.services.crm_formats import salesforce_id18
from bot.services.leadio import LEAD_COLUMNS, RATING_COLUMNS
from tests.conftest import _wipe, closeloop
from tests.test_crm_import import OWNERS, SAMPLES

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
REASONS = ("Bad fit: company size", "Bad data")
HEADER = ",".join(LEAD_COLUMNS)


def seed(session_factory) -> None:
    """Leads as the live loop leaves them: from a CRM, from /lead (no external ID), rated,
    re-rated, rejected, unrated; with cells a spreadsheet would run."""
    s = LeadSettings()
    with session_scope(session_factory) as session:
        session.add(LeadDefinition(version=1, summary="v1", sections={}, author="UMIA"))
        session.flush()

        def lead(external_id, person, owner, days, **kw):
            row, _ = lead_svc.receive_lead(
                session,
                lead=lead_svc.LeadIn(
                    external_id=external_id,
                    person=person,
                    owner_user_id=owner if owner.startswith("U") else None,
                    owner_email={"UANA": "ana@example.com", "UBEN": None}.get(owner, owner),
                    handed_at=NOW - timedelta(days=days),
                    **kw,
                ),
                s=s,
                default_tz="UTC",
                now=NOW - timedelta(days=days),
                origin="crm" if external_id else "slack",
            )
            session.flush()
            return row.id

        def rate(pk, rating, days, user="UANA", **kw):
            lead_svc.rate(
                session,
                lead_pk=pk,
                rating=rating,
                user_id=user,
                managers=["UMGR"],
                reasons=REASONS,
                now=NOW - timedelta(days=days, microseconds=-123456),
                **kw,
            )

        acme = lead(
            "hubspot:contact:51",
            '=HYPERLINK("http://x","click")',
            "UANA",
            6,
            email="Jane@Acme.example",
            company="+Acme; Corp",
            title="-VP",
            source="@webinar",
            campaign='Q4, "EMEA"',
            context="Asked for pricing\nthen\r\nfor a demo\twith 'quotes'",
            handed_by="UMIA",
        )
        rate(acme, "not_ready", 5, note="'=already quoted")
        rate(acme, "rejected", 4, reason="Bad data", note="-1: the phone number is wrong")
        globex = lead("salesforce:00Q5g00000AbCdEAAX", "John Roe", "UBEN", 3, company="Globex")
        rate(globex, "accepted", 3, user="UBEN")  # at once: on time
        lead(None, "Mary from /lead", "UANA", 2, handed_by="UMIA")
        lead("generic:77", "Sam Minor", "sam.owner@example.com", 1)


def export(cli_env, tmp_path, *args) -> bytes:
    """The export's bytes (a file: text-mode stdout would turn a cell's CRLF into LF)."""
    path = tmp_path / "again.csv"
    out = closeloop(cli_env, "export", "leads", "--out", str(path), *args)
    assert out.returncode == 0, out.stderr
    return path.read_bytes()


def test_export_then_import_into_an_empty_database_exports_the_same_bytes(
    cli_env, engine, session_factory, tmp_path
):
    seed(session_factory)
    path = tmp_path / "leads.csv"
    written = closeloop(cli_env, "export", "leads", "--out", str(path))
    assert written.returncode == 0 and "exported 4 rows" in written.stderr, written.stderr
    first = path.read_bytes()
    rows = list(csv.DictReader(io.StringIO(first.decode())))
    acme = rows[0]
    # Spreadsheet-safe, exactly as the win/loss export does it.
    assert acme["person"] == '\'=HYPERLINK("http://x","click")'
    assert acme["company"] == "'+Acme; Corp" and acme["title"] == "'-VP"
    assert acme["source"] == "'@webinar" and acme["note"] == "'-1: the phone number is wrong"
    assert (acme["status"], acme["reason"], acme["rated_by"]) == ("rejected", "Bad data", "UANA")
    assert acme["on_time"] == "no" and acme["definition_version"] == "1"
    assert acme["first_response_at"] < acme["rated_at"]  # the first rating's time, kept
    assert [r["lead_id"] for r in rows][2].startswith("slack-")
    assert rows[3]["owner"] == "sam.owner@example.com" and rows[3]["on_time"] == ""
    assert rows[1]["on_time"] == "yes"
    history = list(csv.DictReader(io.StringIO(export(cli_env, tmp_path, "--ratings").decode())))
    assert list(history[0]) == list(RATING_COLUMNS)
    assert [(r["lead_id"], r["rating"]) for r in history] == [
        ("hubspot:contact:51", "not_ready"),
        ("hubspot:contact:51", "rejected"),
        ("salesforce:00Q5g00000AbCdEAAX", "accepted"),
    ]
    assert history[0]["note"] == "''=already quoted"  # a quote export added, taken off on import

    _wipe(engine)
    imported = closeloop(cli_env, "import", "leads", str(path))
    assert imported.returncode == 0, imported.stderr
    assert "4 new (2 with a rating), 0 already held" in imported.stdout
    assert export(cli_env, tmp_path) == first
    with session_scope(session_factory) as s:
        stored = {lead.person: lead for lead in s.scalars(select(Lead))}
        assert stored['=HYPERLINK("http://x","click")'].context == (
            "Asked for pricing\nthen\r\nfor a demo\twith 'quotes'"
        )
        assert {lead.origin for lead in stored.values()} == {"import"}
    again = closeloop(cli_env, "import", "leads", str(path))
    assert "0 new (0 with a rating), 4 already held" in again.stdout
    assert export(cli_env, tmp_path) == first


SF18 = [salesforce_id18(f"00Q5g00000AbCd{c}") for c in "EFGH"]
CRM_LEADS = {
    "salesforce": (
        "salesforce_leads.csv",
        ["--date-format", "%m/%d/%Y", "--reason-map", "Closed - Not Converted=Bad data"],
        [f"salesforce:{i}" for i in SF18],
        "Bad data",
        (datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC)),
    ),
    "hubspot": (
        "hubspot_contacts.csv",
        [],
        [f"hubspot:contact:{n}" for n in (51, 52, 53, 54)],
        None,  # HubSpot's "Unqualified" says no reason
        (datetime(2026, 10, 5, 10, tzinfo=UTC), datetime(2026, 10, 6, 15, 30, tzinfo=UTC)),
    ),
    "pipedrive": (
        "pipedrive_leads.csv",
        [
            "--map",
            "status=Lead - Labels",
            "--status",
            "Hot=accepted",
            "--status",
            "Cold=rejected",
            "--status",
            "Warm=not ready",
        ],
        [f"pipedrive:lead:adf2108{n}-0e10-11eb-879b-05d71fb426ec" for n in range(4)],
        None,
        (datetime(2026, 10, 5, 10, tzinfo=UTC), datetime(2026, 10, 5, 10, tzinfo=UTC)),
    ),
}


@pytest.mark.parametrize("crm", sorted(CRM_LEADS))
def test_each_crms_lead_export_imports_with_its_statuses_as_ratings(
    cli_env, engine, session_factory, crm
):
    name, options, ids, reason, (handed, rated) = CRM_LEADS[crm]
    path = str(SAMPLES / name)
    for source in (["--from", crm], []):  # named, and guessed from the header
        _wipe(engine)
        out = closeloop(cli_env, "import", "leads", path, "--owners", OWNERS, *source, *options)
        assert out.returncode == 0, out.stderr
        assert "4 new (3 with a rating)" in out.stdout
        with session_scope(session_factory) as s:
            leads = list(s.scalars(select(Lead).order_by(Lead.handed_at)))
            got = [
                (
                    lead.external_id,
                    lead.person,
                    lead.status,
                    lead.owner_email,
                    lead.ratings[-1].reason if lead.ratings else None,
                )
                for lead in leads
            ]
            assert got == [
                (ids[0], "Jane Doe", "accepted", "ana@example.com", None),
                (ids[1], "John Roe", "rejected", "ben@example.com", reason),
                (ids[2], "Mary Major", "not_ready", "ana@example.com", None),
                (ids[3], "Sam Minor", "new", "ben@example.com", None),
            ]
            jane = leads[0]
            assert jane.handed_at == handed and jane.ratings[0].rated_at == rated
            assert jane.company == "Acme Corp" and jane.email == "jane@acme.example"
            assert jane.first_response_at == rated and jane.origin == "import"
            assert all(lead.owner_user_id is None for lead in leads)  # emails: no Slack lookup


def test_a_hubspot_contact_without_an_mql_date_counts_from_its_creation(cli_env, session_factory):
    out = closeloop(
        cli_env, "import", "leads", str(SAMPLES / "hubspot_contacts.csv"), "--owners", OWNERS
    )
    assert out.returncode == 0, out.stderr
    assert "1 rejection(s) without a reason" in out.stdout
    with session_scope(session_factory) as s:
        sam = s.scalars(select(Lead).where(Lead.person == "Sam Minor")).one()
        assert sam.handed_at == datetime(2026, 10, 20, 16, 20, tzinfo=UTC)
        assert sam.sla_due_at == sam.handed_at + timedelta(hours=24)  # LEAD_SLA_HOURS


BAD = [
    # line 2: good
    "L-1,Jane Doe,jane@acme.example,Acme,,,,,UANA,,,2026-10-01T09:00:00Z,,,accepted,,,,"
    "2026-10-01T12:00:00Z,,,",
    # line 3: no person, an owner that is neither, a date that is not one
    "L-2,,,,,,,,nobody,,,2026-13-45,,,new,,,,,,,",
    # line 4: a status Closeloop does not know, and one cell too many
    "L-3,Sam,,,,,,,UBEN,,,2026-10-02,,,maybe,,,,,,,,extra",
    # line 5: a rejection whose reason is not in the taxonomy; a version that is not one
    "L-4,Mary,not-an-email,,,,,,UANA,,,2026-10-03,,x,rejected,Too small,,,,,,",
    # line 6: the same lead again; due before it was handed over
    "L-1,Jane again,,,,,,,UANA,,,2026-10-04,2026-10-03,,new,,,,,,,",
]


def test_every_problem_of_every_row_is_listed_in_one_pass_and_nothing_is_imported(
    cli_env, session_factory, tmp_path
):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([HEADER, *BAD]) + "\n", encoding="utf-8")
    out = closeloop(cli_env, "import", "leads", str(path))
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if ": rejected: " in line]
    f = str(path)
    assert lines == [
        f"{f}:3: rejected: person: is required (the person marketing handed over) (empty)",
        f"{f}:3: rejected: owner: must be a Slack user ID (U...) or an email (value 'nobody')",
        f"{f}:3: rejected: handed_at: is not an ISO 8601 time: '2026-13-45' (e.g. "
        "2026-11-20T15:30:00Z) (value '2026-13-45')",
        f"{f}:4: rejected: status: is not a closeloop status Closeloop knows: give --status "
        "'maybe=RATING' (accepted, not_ready, rejected or new) (value 'maybe')",
        f"{f}:4: rejected: (row): has 1 cell(s) after the last column (value 'extra')",
        f"{f}:5: rejected: email: is not an email address (value 'not-an-email')",
        f"{f}:5: rejected: definition_version: must be a whole number (a definition's "
        "version) (value 'x')",
        f"{f}:5: rejected: reason: is not one of LEAD_REJECT_REASONS (Bad fit: company size, "
        "Bad fit: no budget, Not ready: needs nurture, Bad data, Competitor's customer, "
        "Duplicate): give --reason-map 'TEXT=REASON' (value 'Too small')",
        f"{f}:6: rejected: sla_due_at: is before handed_at (value '2026-10-03')",
        f"{f}:6: rejected: lead_id: is also on line 2 (value 'L-1')",
    ]
    assert "checked 5 rows: 1 good, 4 rejected (10 problems)" in out.stderr
    assert "nothing imported" in out.stderr
    with session_scope(session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Lead)) == 0

    skipped = closeloop(cli_env, "import", "leads", str(path), "--skip-bad")
    assert skipped.returncode == 0, skipped.stderr
    assert "1 new (1 with a rating), 0 already held" in skipped.stdout
    assert "4 skipped" in skipped.stdout
    mapped = closeloop(
        cli_env,
        "import",
        "leads",
        str(path),
        "--skip-bad",
        "--reason-map",
        "Too small=Bad fit: company size",
        "--status",
        "maybe=not_ready",
    )
    assert mapped.returncode == 0, mapped.stderr
    assert "0 new (0 with a rating), 1 already held" in mapped.stdout  # L-3, L-4: still bad
    assert "'maybe'" not in mapped.stderr and "Too small" not in mapped.stderr
    assert "checked 5 rows: 1 good, 4 rejected (8 problems)" in mapped.stderr
    with session_scope(session_factory) as s:
        rated = {r.lead.external_id: (r.rating, r.reason) for r in s.scalars(select(LeadRating))}
    assert rated == {"L-1": ("accepted", None)}


def test_a_crm_files_problems_name_its_own_columns(cli_env, tmp_path):
    path = tmp_path / "sf.csv"
    header = "Lead ID,First Name,Last Name,Lead Status,Lead Owner,Create Date"
    path.write_text(
        f"{header}\n00Q1,Ann,Lee,Pending,Zed Nobody,2026-10-01\n00Q2,,,Qualified,UANA,soon\n"
    )
    out = closeloop(cli_env, "import", "leads", str(path), "--owners", OWNERS)
    assert out.returncode == 1
    f = str(path)
    assert f"{f}:2: rejected: Lead Status: is not a salesforce status" in out.stderr
    assert "(value 'Pending')" in out.stderr
    assert f"{f}:2: rejected: Lead Owner: is not in the --owners file (value 'Zed Nobody')" in (
        out.stderr
    )
    assert f"{f}:3: rejected: Last Name: is required" in out.stderr
    assert f"{f}:3: rejected: Create Date: is not a date" in out.stderr and "'soon'" in out.stderr


def test_a_file_no_profile_fits_and_bad_options_are_one_line(cli_env, tmp_path):
    path = tmp_path / "mystery.csv"
    path.write_text("Who,When\nAnn,2026-10-01\n")
    out = closeloop(cli_env, "import", "leads", str(path))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "its columns are Who, When" in out.stderr and "--from" in out.stderr
    bad_reason = closeloop(
        cli_env, "import", "leads", str(path), "--reason-map", "Too small=Too small"
    )
    assert bad_reason.returncode == 2 and "LEAD_REJECT_REASONS" in bad_reason.stderr
    bad_status = closeloop(cli_env, "import", "leads", str(path), "--status", "x=maybe")
    assert bad_status.returncode == 2 and "STATUS=RATING" in bad_status.stderr
    winloss = closeloop(cli_env, "import", "winloss", str(path), "--status", "x=new")
    assert winloss.returncode == 2 and "for import leads" in winloss.stderr


def test_a_spreadsheet_imports_like_its_csv_and_the_history_file_is_refused(
    cli_env, session_factory, tmp_path
):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    with open(SAMPLES / "hubspot_contacts.csv", encoding="utf-8", newline="") as stream:
        for n, row in enumerate(csv.reader(stream)):
            if n and row[-3]:  # Create Date as the typed cell a spreadsheet holds
                row[-3] = datetime.fromisoformat(row[-3])
            sheet.append(row)
    path = tmp_path / "contacts.xlsx"
    book.save(path)
    out = closeloop(cli_env, "import", "leads", str(path), "--owners", OWNERS)
    assert out.returncode == 0, out.stderr
    assert "4 new (3 with a rating)" in out.stdout
    with session_scope(session_factory) as s:
        sam = s.scalars(select(Lead).where(Lead.external_id == "hubspot:contact:54")).one()
        assert sam.handed_at == datetime(2026, 10, 20, 16, 20, tzinfo=UTC)
    history = tmp_path / "ratings.csv"
    history.write_text(",".join(RATING_COLUMNS) + "\n")
    refused = closeloop(cli_env, "import", "leads", str(history))
    assert refused.returncode == 2 and "rating history" in refused.stderr
