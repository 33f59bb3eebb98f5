"""Input nobody meant to send, driven the way it arrives: a spreadsheet formula in a rep's
reason, oversized or chunked HTTP bodies, dates and JSON a CRM should not send, NUL
characters from Slack. Each is refused with a 4xx or an inline error, or stored harmlessly;
never a 500."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.models import Deal, WinLossEntry
from tests.conftest import closeloop

SECRET = "deals-secret"

# --- CSV export: formulas neutralised, the round trip byte for byte -------------------------

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
DANGEROUS = [
    '=HYPERLINK("https://evil","x")',
    "+1",
    "-x",
    "@SUM(A1)",
    "\tfoo",
    "\rbar",
    "'=already",
    "'plain",
    "''=two quotes",
    "'",
]


def _seed_entries(session_factory, reasons: list[str]) -> None:
    closed = datetime(2026, 10, 1, 14, 0, tzinfo=UTC)
    with session_scope(session_factory) as s:
        for n, reason in enumerate(reasons):
            deal = Deal(
                external_id=f"CRM-{n}",
                name=f"Deal {n}" if n % 2 else reason,
                outcome="lost",
                closed_at=closed + timedelta(minutes=n),
                owner_user_id="UANA",
                origin="crm",
                received_at=closed,
                deadline_at=closed + timedelta(hours=24),
            )
            s.add(deal)
            s.add(
                WinLossEntry(
                    deal=deal,
                    outcome="lost",
                    reason=reason,
                    reason_category="Price",
                    insight=reason,
                    logged_at=closed + timedelta(hours=1),
                    on_time=True,
                    author_user_id="UANA",
                )
            )


def test_export_neutralises_formulas_and_imports_back_byte_for_byte(
    cli_env, tmp_path, session_factory
):
    _seed_entries(session_factory, DANGEROUS)
    out = tmp_path / "export.csv"
    exported = closeloop(cli_env, "export", "winloss", "--output", str(out))
    assert exported.returncode == 0, exported.stderr
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert len(rows) == len(DANGEROUS)
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_START), row
    assert {r[5] for r in rows} >= {'\'=HYPERLINK("https://evil","x")', "'\tfoo", "''=already"}
    assert "'plain" in {r[5] for r in rows}  # nothing a spreadsheet would run: left alone

    back = closeloop(cli_env, "import", "winloss", str(out))
    assert back.returncode == 0, back.stderr
    # "unchanged": every parsed cell equals what is stored, byte for byte
    assert f"0 new, 0 updated, {len(DANGEROUS)} unchanged" in back.stdout, back.stdout
    with session_scope(session_factory) as s:
        entries = s.scalars(select(WinLossEntry).join(WinLossEntry.deal).order_by(Deal.id)).all()
        assert [e.reason for e in entries] == DANGEROUS
        assert [e.insight for e in entries] == DANGEROUS
    again = tmp_path / "again.csv"
    assert closeloop(cli_env, "export", "winloss", "--output", str(again)).returncode == 0
    assert again.read_bytes() == out.read_bytes()


def test_a_hand_written_csv_loses_a_quote_only_before_a_formula_character(
    cli_env, tmp_path, session_factory
):
    header = (
        "deal_id,deal_name,outcome,closed_at,logged_at,reason,reason_category,competitor,"
        "insight,amount,source,owner"
    )
    cells = {"CRM-A": "'plain quote", "CRM-B": "'=1+1 typed as text", "CRM-C": "''quoted"}
    lines = [header] + [
        f'{deal_id},Deal {deal_id},Lost,2026-10-01,2026-10-01T20:00:00Z,"{reason}",Price,,'
        f"Lead with ROI,,,UANA"
        for deal_id, reason in cells.items()
    ]
    path = tmp_path / "mine.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = closeloop(cli_env, "import", "winloss", str(path))
    assert done.returncode == 0, done.stderr
    with session_scope(session_factory) as s:
        got = {e.deal.external_id: e.reason for e in s.scalars(select(WinLossEntry))}
    assert got == {"CRM-A": "'plain quote", "CRM-B": "=1+1 typed as text", "CRM-C": "'quoted"}
