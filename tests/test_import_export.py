"""`closeloop import winloss`, `closeloop export`, `closeloop deal-closed`, `competitors merge`,
run as an operator would, against the suite's database(s) and the fake Slack."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import func, select

from bot.db import session_scope
from bot.models import Competitor, Deal, WinLossEntry, WinLossRevision
from tests.conftest import closeloop

HEADER = (
    "deal_id,deal_name,outcome,closed_at,logged_at,reason,reason_category,competitor,"
    "insight,amount,source,owner"
)
GOOD = [
    'CRM-1,Acme renewal,Lost,2026-10-01T14:00:00Z,2026-10-01T20:00:00Z,"They said: ""we can\'t '
    'justify a second tool""",price,Competitor X,Lead with consolidation,12000,Webinar,UANA',
    "CRM-2,Globex,WON,2026-10-02T09:00:00+02:00,2026-10-05T09:00:00Z,The CFO loved the live ROI "
    "calculator demo,Other,,Demo ROI early,,,ben@example.com",
    "CRM-3,Initech,No Decision,2026-10-03,2026-10-03T18:00:00Z,They went quiet after the "
    "security review,Timing or budget,competitor-x,Send the security pack first,500.50,,UBEN",
]


def write(tmp_path, *rows, name="deals.csv", header=HEADER):
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def counts(session_factory):
    with session_scope(session_factory) as s:
        return (
            s.scalar(select(func.count()).select_from(Deal)),
            s.scalar(select(func.count()).select_from(WinLossEntry)),
        )


def test_import_then_reimport_changes_nothing(cli_env, tmp_path, session_factory):
    path = write(tmp_path, *GOOD)
    first = closeloop(cli_env, "import", "winloss", str(path))
    assert first.returncode == 0, first.stderr
    assert "3 new, 0 updated, 0 unchanged" in first.stdout
    with session_scope(session_factory) as s:
        entries = {e.deal.external_id: e for e in s.scalars(select(WinLossEntry))}
        assert entries["CRM-1"].on_time is True and entries["CRM-2"].on_time is False
        assert entries["CRM-3"].on_time is True  # a date-only close counts to the next day's end
        assert entries["CRM-2"].deal.owner_email == "ben@example.com"
        assert entries["CRM-1"].reason == 'They said: "we can\'t justify a second tool"'
        assert entries["CRM-1"].reason_category == "Price"  # matched case-insensitively
        assert s.scalar(select(func.count()).select_from(Competitor)) == 1  # X == x
    again = closeloop(cli_env, "import", "winloss", str(path))
    assert "0 new, 0 updated, 3 unchanged" in again.stdout
    assert counts(session_factory) == (3, 3)


def test_export_imports_back_unchanged(cli_env, tmp_path, session_factory):
    closeloop(cli_env, "import", "winloss", str(write(tmp_path, *GOOD)))
    out = tmp_path / "export.csv"
    exported = closeloop(cli_env, "export", "winloss", "--output", str(out))
    assert exported.returncode == 0 and "exported 3 rows" in exported.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["deal_id"] for r in rows] == ["CRM-1", "CRM-2", "CRM-3"]
    assert rows[1]["closed_at"] == "2026-10-02T07:00:00Z" and rows[2]["amount"] == "500.50"
    assert tuple(rows[0]) == tuple(HEADER.split(","))
    back = closeloop(cli_env, "import", "winloss", str(out))
    assert "0 new, 0 updated, 3 unchanged" in back.stdout, back.stdout + back.stderr
    since = closeloop(cli_env, "export", "winloss", "--since", "2026-10-02")
    assert [r["deal_id"] for r in csv.DictReader(io.StringIO(since.stdout))] == ["CRM-2", "CRM-3"]


def test_changed_row_updates_and_keeps_the_old_text(cli_env, tmp_path, session_factory):
    closeloop(cli_env, "import", "winloss", str(write(tmp_path, *GOOD)))
    changed = GOOD[1].replace("Demo ROI early", "Demo ROI in the first call")
    result = closeloop(
        cli_env, "import", "winloss", str(write(tmp_path, GOOD[0], changed, GOOD[2]))
    )
    assert "0 new, 1 updated, 2 unchanged" in result.stdout
    with session_scope(session_factory) as s:
        assert s.scalars(select(WinLossRevision.insight)).all() == ["Demo ROI early"]


BAD_ROWS = [
    ("CRM-4,,lost,2026-10-01,2026-10-02,Real words from the buyer here,,,,,,UANA", "deal_name"),
    ("CRM-4,X,maybe,2026-10-01,2026-10-02,Real words from the buyer here,,,,,,UANA", "outcome"),
    ("CRM-4,X,lost,01/10/2026,2026-10-02,Real words from the buyer here,,,,,,UANA", "closed_at"),
    ("CRM-4,X,lost,2026-10-01,later,Real words from the buyer here,,,,,,UANA", "logged_at"),
    ("CRM-4,X,lost,2026-10-01,2026-10-02,,,,,,,UANA", "reason"),
    ("CRM-4,X,lost,2026-10-01,2026-10-02,Real words,Vibes,,,,,UANA", "reason_category"),
    ("CRM-4,X,lost,2026-10-01,2026-10-02,Real words,,,,lots,,UANA", "amount"),
    ("CRM-4,X,lost,2026-10-01,2026-10-02,Real words,,,,,,bob", "owner"),
    ("CRM-1,Dup,lost,2026-10-01,2026-10-02,Real words,,,,,,UANA", "also on line 2"),
]


@pytest.mark.parametrize(("row", "why"), BAD_ROWS)
def test_a_bad_row_is_reported_with_its_line_and_nothing_is_imported(
    cli_env, tmp_path, session_factory, row, why
):
    path = write(tmp_path, GOOD[0], row, GOOD[1])
    result = closeloop(cli_env, "import", "winloss", str(path))
    assert result.returncode == 1
    assert f"{path}:3: rejected: " in result.stderr and why in result.stderr
    assert "nothing imported" in result.stderr
    assert counts(session_factory) == (0, 0)
    skipped = closeloop(cli_env, "import", "winloss", str(path), "--skip-bad")
    assert skipped.returncode == 0 and "2 new" in skipped.stdout and "1 skipped" in skipped.stdout
    assert counts(session_factory) == (2, 2)


def test_missing_column_and_missing_file_are_one_line(cli_env, tmp_path):
    path = write(tmp_path, "x", header="deal_id,deal_name")
    result = closeloop(cli_env, "import", "winloss", str(path))
    assert result.returncode == 2 and "no column outcome" in result.stderr
    gone = closeloop(cli_env, "import", "winloss", str(tmp_path / "nope.csv"))
    assert gone.returncode == 2 and gone.stderr.count("\n") == 1


def test_deal_closed_from_the_command_line(cli_env, fake_slack, tmp_path, session_factory):
    fake_slack.add_channel("CMKTG", name="marketing-feedback")
    args = [
        "deal-closed",
        "--deal-id",
        "CRM-7",
        "--name",
        "Umbrella",
        "--outcome",
        "Won",
        "--closed-at",
        "2026-11-20T10:00:00",
        "--owner-email",
        "ana@example.com",
        "--amount",
        "900",
    ]
    first = closeloop(cli_env, *args)
    assert first.returncode == 0, first.stderr
    assert "owner asked" in first.stdout
    nudges = [c for c in fake_slack.calls_to("chat.postMessage") if c.params["channel"] == "UANA"]
    assert len(nudges) == 1 and "Umbrella" in json.dumps(nudges[0].params)
    assert "already known" in closeloop(cli_env, *args).stdout
    bad = closeloop(cli_env, "deal-closed", "--deal-id", "CRM-8", "--name", "X")
    assert bad.returncode == 2 and "outcome" in bad.stderr
    payload = tmp_path / "deal.json"
    payload.write_text(
        json.dumps(
            {
                "deal_id": "CRM-9",
                "name": "Soylent",
                "outcome": "lost",
                "closed_at": "2026-11-20",
                "owner_slack_id": "UBEN",
            }
        )
    )
    assert closeloop(cli_env, "deal-closed", "--json", str(payload)).returncode == 0
    assert counts(session_factory)[0] == 2


def test_competitors_merge_command(cli_env, tmp_path, session_factory):
    rows = [GOOD[0], GOOD[1].replace(",,Demo ROI early", ",AcmeCRM,Demo ROI early")]
    closeloop(cli_env, "import", "winloss", str(write(tmp_path, *rows)))
    merged = closeloop(cli_env, "competitors", "merge", "acmecrm", "competitor x")
    assert merged.returncode == 0 and "1 entries moved" in merged.stdout
    listed = closeloop(cli_env, "competitors", "list")
    assert listed.stdout.split("\n")[0] == "Competitor X" and "AcmeCRM" not in listed.stdout
    missing = closeloop(cli_env, "competitors", "merge", "Nobody", "competitor x")
    assert missing.returncode == 1 and "No competitor called" in missing.stderr


def test_export_feedback_has_its_columns(cli_env):
    result = closeloop(cli_env, "export", "feedback")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == (
        "week_start,user_id,status,skip_reason,worked,fell_flat,insight,campaign,answered_at,"
        "acknowledged_at,acknowledged_by,notes"
    )


def test_a_multi_line_row_is_reported_at_its_first_line(cli_env, tmp_path, session_factory):
    multi = (
        'CRM-5,Multi,lost,2026-10-01,2026-10-02,"line one\nline two of the quote",Vibes,,,,,UANA'
    )
    path = write(tmp_path, GOOD[0], multi, GOOD[1])
    result = closeloop(cli_env, "import", "winloss", str(path))
    assert f"{path}:3: rejected: reason_category" in result.stderr


def test_an_import_larger_than_a_batch_upserts_every_row(cli_env, tmp_path, session_factory):
    """Rows go in batches (csvio.IMPORT_BATCH): new, unchanged and changed rows across batch
    boundaries, and one competitor name on thousands of rows, are each counted once."""
    rows = [
        f"BIG-{n},Deal {n},lost,2026-10-01,2026-10-02T10:00:00Z,They chose the cheaper tool,"
        f",{'Competitor X' if n % 2 else ''},,{n}.50,,UANA"
        for n in range(4500)
    ]
    first = closeloop(cli_env, "import", "winloss", str(write(tmp_path, *rows)))
    assert first.returncode == 0, first.stderr
    assert "4500 new, 0 updated, 0 unchanged" in first.stdout
    rows[3000] = rows[3000].replace("cheaper tool", "cheaper tool said the CFO")
    again = closeloop(cli_env, "import", "winloss", str(write(tmp_path, *rows, GOOD[0])))
    assert "1 new, 1 updated, 4499 unchanged" in again.stdout, again.stdout + again.stderr
    assert counts(session_factory) == (4501, 4501)
    with session_scope(session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Competitor)) == 1
        assert s.scalars(select(WinLossRevision.reason)).all() == ["They chose the cheaper tool"]
        big = s.scalars(select(Deal).where(Deal.external_id == "BIG-4499")).one()
        assert str(big.amount) == "4499.50" and big.entry.competitor.name == "Competitor X"


def test_one_pass_reports_every_problem_of_every_row(cli_env, tmp_path, session_factory):
    rows = [
        GOOD[0],
        "CRM-4,,maybe,01/10/2026,2026-10-02,,Vibes,,,lots,,bob",  # seven problems
        GOOD[1],
        "CRM-1,Dup,lost,2026-10-01,2026-10-02,Real words,,,,,,UANA,extra",  # two more
    ]
    path = write(tmp_path, *rows)
    result = closeloop(cli_env, "import", "winloss", str(path))
    assert result.returncode == 1
    assert "4 rows: 2 good, 2 rejected (9 problems)" in result.stderr
    lines = [line for line in result.stderr.splitlines() if ": rejected: " in line]
    assert lines == [
        f"{path}:3: rejected: deal_name: is required (empty)",
        f"{path}:3: rejected: outcome: must be won, lost or no_decision, not 'maybe' "
        "(value 'maybe')",
        f"{path}:3: rejected: closed_at: could be month/day or day/month: give --date-format "
        "%m/%d/%Y or %d/%m/%Y (value '01/10/2026')",
        f"{path}:3: rejected: reason: is required (the customer's own words) (empty)",
        f"{path}:3: rejected: reason_category: is not one of: Price, Product gap, "
        "Implementation / time to value, Timing or budget, Relationship / trust, "
        "Incumbent or competitor, Other (value 'Vibes')",
        f"{path}:3: rejected: amount: must be a number, not 'lots' (value 'lots')",
        f"{path}:3: rejected: owner: must be a Slack user ID (U...) or an email, not 'bob' "
        "(value 'bob')",
        f"{path}:5: rejected: (row): has 1 cell(s) after the last column (value 'extra')",
        f"{path}:5: rejected: deal_id: is also on line 2 (value 'CRM-1')",
    ]
    assert "nothing imported" in result.stderr and counts(session_factory) == (0, 0)
    skipped = closeloop(cli_env, "import", "winloss", str(path), "--skip-bad")
    assert skipped.returncode == 0 and "2 new" in skipped.stdout and "2 skipped" in skipped.stdout
    assert counts(session_factory) == (2, 2)
