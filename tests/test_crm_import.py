"""`closeloop import winloss FILE --from CRM`: Salesforce, HubSpot and Pipedrive exports, built
from each CRM's documented column names (tests/crm_samples/README.md), run as an operator
would; the same deals give the same digest as in Closeloop's own format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.models import Deal
from tests.conftest import _wipe, closeloop

SAMPLES = Path(__file__).parent / "crm_samples"
OWNERS = str(SAMPLES / "owners.csv")
EXPORTS = {
    "salesforce": (
        "salesforce_opportunities.csv",
        ["--date-format", "%m/%d/%Y", "--map", "reason=Win/Loss Reason (Customer Quote)"],
    ),
    "hubspot": ("hubspot_deals.csv", []),
    "pipedrive": ("pipedrive_deals.csv", ["--map", "won_reason=Deal - Win reason"]),
}


def digest(env) -> dict:
    result = closeloop(env, "digest", "--month", "2026-10", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def deals(session_factory) -> list[tuple]:
    with session_scope(session_factory) as s:
        return [
            (d.name, d.outcome, d.closed_at.date(), d.amount, d.owner_email, d.entry.reason)
            for d in s.scalars(select(Deal).order_by(Deal.name))
        ]


@pytest.mark.parametrize("crm", sorted(EXPORTS))
def test_a_crm_export_gives_the_same_digest_as_closeloops_own_format(
    cli_env, engine, session_factory, crm
):
    own = closeloop(cli_env, "import", "winloss", str(SAMPLES / "closeloop_winloss.csv"))
    assert own.returncode == 0 and "4 new" in own.stdout, own.stderr
    expected, expected_deals = digest(cli_env), deals(session_factory)
    _wipe(engine)
    name, options = EXPORTS[crm]
    path = str(SAMPLES / name)
    imported = closeloop(
        cli_env, "import", "winloss", path, "--from", crm, "--owners", OWNERS, *options
    )
    assert imported.returncode == 0, imported.stderr
    assert "4 new, 0 updated, 0 unchanged" in imported.stdout
    assert deals(session_factory) == expected_deals
    assert digest(cli_env) == expected
    _wipe(engine)
    guessed = closeloop(cli_env, "import", "winloss", path, "--owners", OWNERS, *options)
    assert guessed.returncode == 0 and "4 new" in guessed.stdout, guessed.stderr  # no --from


def test_an_unknown_file_lists_the_columns_it_saw_and_the_ones_it_needs(cli_env, tmp_path):
    path = tmp_path / "mystery.csv"
    path.write_text("Client,Result,When\nAcme,lost,2026-10-01\n")
    result = closeloop(cli_env, "import", "winloss", str(path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "its columns are Client, Result, When" in result.stderr
    assert "needs" in result.stderr and "--from" in result.stderr and "--map" in result.stderr
    named = closeloop(cli_env, "import", "winloss", str(path), "--from", "hubspot")
    assert named.returncode == 2
    assert "not a hubspot export" in named.stderr and "'Deal Name'" in named.stderr
    mapped = closeloop(cli_env, "import", "winloss", str(path), "--map", "reason=Notes")
    assert mapped.returncode == 2 and "--map names no column" in mapped.stderr


def test_crm_cells_are_read_as_the_crm_writes_them(cli_env, tmp_path, session_factory):
    path = tmp_path / "hubspot.csv"
    path.write_text(
        "Record ID,Deal Name,Deal Stage,Close Date,Amount,Deal owner,Closed Lost Reason\n"
        "1,Open one,Appointment scheduled,11/20/2026,,ana@example.com,x\n"
        "2,Ambiguous,Closed lost,03/04/2026,,ana@example.com,They chose the incumbent vendor\n"
        "3,By name,Closed lost,2026-10-01,€1.234,50,Nobody Known,They chose the incumbent\n"
        '4,Good,Closed lost,20.10.2026,"$1,234.50",ana@example.com,They chose the incumbent\n'
    )
    result = closeloop(cli_env, "import", "winloss", str(path), "--owners", OWNERS)
    assert result.returncode == 1
    assert f"{path}:2: rejected: Deal Stage: must be won, lost or no_decision" in result.stderr
    assert f"{path}:3: rejected: Close Date: could be month/day or day/month" in result.stderr
    assert f"{path}:4: rejected: Deal owner: is not in the --owners file" in result.stderr
    assert f"{path}:4: rejected: (row)" in result.stderr  # the unquoted decimal comma
    assert "logged_at" not in result.stderr  # optional: it is the close when not given
    fixed = closeloop(
        cli_env,
        "import",
        "winloss",
        str(path),
        "--skip-bad",
        "--date-format",
        "%d/%m/%Y",
        "--owners",
        OWNERS,
    )
    assert "2 new" in fixed.stdout, fixed.stderr
    with session_scope(session_factory) as s:
        got = {d.name: d for d in s.scalars(select(Deal))}
        assert str(got["Ambiguous"].closed_at.date()) == "2026-04-03"
        assert str(got["Good"].amount) == "1234.50"


def test_a_shorthand_reason_is_imported_flagged_and_counted_in_the_digest(cli_env, session_factory):
    path = str(SAMPLES / "closeloop_winloss.csv")
    imported = closeloop(cli_env, "import", "winloss", path)
    assert imported.returncode == 0 and "4 new" in imported.stdout, imported.stderr
    assert "1 shorthand reason(s) flagged" in imported.stdout
    assert f"{path}:4: flagged: reason 'Price' is shorthand" in imported.stderr
    assert "D-3" in {d[0] for d in _ids(session_factory)}  # history is kept as it is
    figures = digest(cli_env)
    assert (figures["reasons_shorthand"], figures["reasons_total"]) == (1, 4)
    text = closeloop(cli_env, "digest", "--month", "2026-10").stdout
    assert "1 of 4 reasons are shorthand" in text


def _ids(session_factory) -> list[tuple]:
    with session_scope(session_factory) as s:
        return [(d.external_id,) for d in s.scalars(select(Deal))]


def test_an_xlsx_export_imports_like_its_csv(cli_env, engine, session_factory, tmp_path):
    import csv
    from datetime import datetime

    from openpyxl import Workbook

    source = SAMPLES / "hubspot_deals.csv"
    closeloop(cli_env, "import", "winloss", str(source), "--owners", OWNERS)
    from_csv = deals(session_factory)
    _wipe(engine)
    book = Workbook()
    sheet = book.active
    for n, row in enumerate(csv.reader(source.open())):
        if n:  # typed cells, as a spreadsheet holds them
            row[4] = datetime.strptime(row[4], "%d.%m.%Y")  # type: ignore[call-overload]
            row[5] = float(row[5]) if row[5] else None  # type: ignore[call-overload]
        sheet.append(row)
    path = tmp_path / "hubspot.xlsx"
    book.save(path)
    result = closeloop(cli_env, "import", "winloss", str(path), "--owners", OWNERS)
    assert result.returncode == 0 and "4 new" in result.stdout, result.stderr
    assert deals(session_factory) == from_csv
    broken = tmp_path / "broken.xlsx"
    broken.write_text("not a workbook")
    bad = closeloop(cli_env, "import", "winloss", str(broken))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "spreadsheet" in bad.stderr


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise(cli_env):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    path = str(SAMPLES / "closeloop_winloss.csv")
    piped = closeloop(cli_env, "import", "winloss", path)
    assert "imported 4/4 rows" in piped.stderr and "\r" not in piped.stderr
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 80 columns
    done = subprocess.run(
        [sys.executable, "-m", "bot", "import", "winloss", path],
        env=cli_env,
        stderr=terminal,
        stdout=subprocess.PIPE,
        timeout=60,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert done.returncode == 0
    assert b"100%" in shown and b"4/4" in shown and b"imported 4/4 rows" not in shown


@pytest.mark.parametrize("crm", sorted(EXPORTS))
def test_an_imported_crm_deal_is_the_deal_its_hook_later_reports(cli_env, session_factory, crm):
    """History imported from a CRM's export, then the same deal through that CRM's webhook or
    the daily sync (which store ``<crm>:<id>``): one deal, its entry kept, nobody nudged."""
    from bot.services import deal_input
    from bot.services import winloss as wl_svc

    name, options = EXPORTS[crm]
    imported = closeloop(
        cli_env,
        "import",
        "winloss",
        str(SAMPLES / name),
        "--from",
        crm,
        "--owners",
        OWNERS,
        *options,
    )
    assert imported.returncode == 0, imported.stderr
    with session_scope(session_factory) as s:
        ids = sorted(s.scalars(select(Deal.external_id)))
        assert ids and all(i is not None and i.startswith(f"{crm}:") for i in ids), ids
        first = s.scalars(select(Deal).where(Deal.external_id == ids[0])).one()
        again = deal_input.DealIn(
            external_id=ids[0],
            name=first.name,
            outcome=first.outcome,
            closed_at=first.closed_at,
            owner_email=first.owner_email,
        )
        row, created = wl_svc.receive_deal(
            s, deal=again, deadline_hours=24, now=first.closed_at, origin="crm"
        )
        assert not created and row.id == first.id and row.entry is not None
    reimported = closeloop(
        cli_env,
        "import",
        "winloss",
        str(SAMPLES / name),
        "--from",
        crm,
        "--owners",
        OWNERS,
        *options,
    )
    assert "0 new" in reimported.stdout, reimported.stdout  # the prefixed IDs match again


def test_a_salesforce_report_id_meets_the_id_its_outbound_message_sends(cli_env, session_factory):
    """Reports show 15-character IDs, Outbound Messages 18: both are stored in the 18-character
    form (Salesforce's documented pair: 001A0000006Vm9r is 001A0000006Vm9rIAC)."""
    from bot.services.crm_formats import salesforce_id18

    assert salesforce_id18("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert salesforce_id18("001A0000006Vm9rIAC") == "001A0000006Vm9rIAC"
    name, options = EXPORTS["salesforce"]
    rows = (SAMPLES / name).read_text().splitlines()
    short = [rows[0], rows[1].replace("0065g00000AbCdEAA1", "001A0000006Vm9r")]
    path = SAMPLES.parent / "_tmp_sf15.csv"
    try:
        path.write_text("\n".join(short) + "\n")
        out = closeloop(
            cli_env,
            "import",
            "winloss",
            str(path),
            "--from",
            "salesforce",
            "--owners",
            OWNERS,
            *options,
        )
    finally:
        path.unlink(missing_ok=True)
    assert out.returncode == 0, out.stderr
    with session_scope(session_factory) as s:
        assert list(s.scalars(select(Deal.external_id))) == ["salesforce:001A0000006Vm9rIAC"]


def test_a_pipelines_own_stage_names_are_mapped_with_stage(cli_env, session_factory, tmp_path):
    rows = (SAMPLES / "hubspot_deals.csv").read_text().splitlines()
    custom = [rows[0], rows[1].replace("Closed lost", "Closed - No Budget")]
    path = tmp_path / "hubspot_custom_stage.csv"
    path.write_text("\n".join(custom) + "\n")
    args = ("import", "winloss", str(path), "--from", "hubspot", "--owners", OWNERS)
    refused = closeloop(cli_env, *args)
    assert refused.returncode == 1 and "'Closed - No Budget'" in refused.stderr, refused.stderr
    imported = closeloop(cli_env, *args, "--stage", "closed - no budget=no_decision")
    assert imported.returncode == 0, imported.stderr
    with session_scope(session_factory) as s:
        assert list(s.scalars(select(Deal.outcome))) == ["no_decision"]
    bad = closeloop(cli_env, *args, "--stage", "Closed - No Budget=maybe")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "--stage" in bad.stderr and "no_decision" in bad.stderr


def test_amounts_in_another_currency_are_stored_as_is_and_flagged(cli_env, tmp_path):
    name, options = EXPORTS["pipedrive"]
    path = str(SAMPLES / name)
    args = ("import", "winloss", path, "--from", "pipedrive", "--owners", OWNERS, *options)
    dollars = closeloop({**cli_env, "CURRENCY": "USD"}, *args)
    assert dollars.returncode == 0, dollars.stderr
    assert f"{path}:2: flagged: amount in EUR, not CURRENCY USD" in dollars.stderr
    assert "4 amount(s) in another currency flagged" in dollars.stdout
    euros = closeloop({**cli_env, "CURRENCY": "EUR"}, *args)
    assert euros.returncode == 0 and "currency" not in euros.stderr + euros.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "Deal - ID;Deal - Title;Deal - Status;Deal - Value;Deal - Currency;Deal - Owner;"
        "Deal - Lost reason;Deal - Lost time\n"
        "9;X;lost;1,00;euro;ana@example.com;They chose the incumbent vendor;2026-10-05 14:00:00\n"
    )
    refused = closeloop(cli_env, "import", "winloss", str(bad), "--from", "pipedrive")
    assert refused.returncode == 1
    assert f"{bad}:2: rejected: Deal - Currency: is not a three-letter currency code" in (
        refused.stderr
    )
