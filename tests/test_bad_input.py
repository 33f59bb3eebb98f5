"""Input nobody meant to send, driven the way it arrives: a spreadsheet formula in a rep's
reason, oversized or chunked HTTP bodies, dates and JSON a CRM should not send, NUL
characters from Slack. Each is refused with a 4xx or an inline error, or stored harmlessly;
never a 500."""

from __future__ import annotations

import csv
import http.client
import json
import select as io_select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db import session_scope
from bot.models import Deal, FeedbackAnswer, WinLossEntry
from tests.conftest import closeloop
from tests.harness import sign, tick
from tests.test_loop_scenario import FRI_1500_UTC, all_text, dms_to
from tests.test_winloss_scenario import QUOTE, fill, submit_winloss

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


def test_an_import_with_a_nul_character_names_its_line_and_column(cli_env, tmp_path):
    header = (
        "deal_id,deal_name,outcome,closed_at,logged_at,reason,reason_category,competitor,"
        "insight,amount,source,owner"
    )
    row = "CRM-N,Nul,Lost,2026-10-01,2026-10-01T20:00:00Z,They said\x00 no,Price,,Do X,,,UANA"
    path = tmp_path / "nul.csv"
    path.write_text(f"{header}\n{row}\n", encoding="utf-8")
    out = closeloop(cli_env, "import", "winloss", str(path))
    assert out.returncode == 1, out.stderr
    assert "nul.csv:2: rejected: reason: contains a NUL character" in out.stderr
    assert "Traceback" not in out.stderr


# --- HTTP bodies: capped before they are read; chunked deals are read --------------------

MiB = 1024 * 1024
HUGE = 300 * MiB


@pytest.fixture
def settings_overrides():
    return {
        "WINLOSS_CHANNEL": "CWINLOSS",
        "WINLOSS_ESCALATION_CHANNEL": "CMGR",
        "DEALS_WEBHOOK_SECRET": SECRET,
        "SALES_MANAGERS": "UMGR",
    }


def _rss(pid: int | str = "self") -> int:
    """Resident memory of process ``pid`` in bytes (Linux)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _send_huge(base_url: str, path: str, *, chunked: bool, total: int = HUGE) -> tuple[int, int]:
    """POST ``total`` bytes of nothing (as a Content-Length, or chunked) without holding them,
    stopping as soon as the server answers; returns (status, bytes of body sent)."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-Slack-Request-Timestamp: {int(time.time())}\r\nX-Slack-Signature: v0=unsigned\r\n"
        f"{framing}\r\n\r\n".encode()
    )
    block = b"x" * (64 * 1024)
    piece = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
    sent, offset, answer = 0, 0, b""
    sock.setblocking(False)
    deadline = time.monotonic() + 60
    try:
        while sent < total and time.monotonic() < deadline:
            readable, writable, _ = io_select.select([sock], [sock], [], 5)
            if readable:
                break
            if writable:
                n = sock.send(piece[offset:])
                offset += n
                if offset == len(piece):
                    sent, offset = sent + len(block), 0
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed: its answer is read below
    sock.setblocking(True)
    sock.settimeout(10)
    try:
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_slack_request_is_413_before_it_is_read(harness, chunked):
    before = _rss()
    status, sent = _send_huge(harness.url, "/slack/events", chunked=chunked)
    assert status == 413
    assert sent < 64 * MiB  # answered long before the 300 MB were sent
    assert _rss() - before < 40 * MiB
    assert harness.request("/slack/events", b"{}", signed=False).status == 401  # still serving


def _signed_deal(body: bytes, now: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Closeloop-Request-Timestamp": str(now),
        "X-Closeloop-Signature": sign(body, now, SECRET),
    }


def _post_chunked(base_url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple:
    """POST ``body`` with Transfer-Encoding: chunked (no Content-Length), in small chunks."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        pieces = (body[i : i + 7] for i in range(0, len(body), 7))
        conn.request("POST", path, body=pieces, headers=headers, encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def deal(**changes):
    body = {
        "deal_id": "CRM-1",
        "name": "Acme renewal",
        "outcome": "LOST",
        "closed_at": "2026-11-18T10:00:00Z",
        "owner_email": "ana@example.com",
        "amount": 12000,
    }
    body.update(changes)
    return body


def test_a_signed_chunked_deal_is_read_and_stored(harness):
    h = harness
    body = json.dumps(deal()).encode()
    status, answer = _post_chunked(
        h.url, "/hooks/deal-closed", body, _signed_deal(body, int(h.clock().timestamp()))
    )
    h.settle()
    assert (status, answer["ok"], answer["deal_id"]) == (201, True, "CRM-1")
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(Deal.name)).all() == ["Acme renewal"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_deal_is_413_before_it_is_read(harness, chunked):
    status, sent = _send_huge(harness.url, "/hooks/deal-closed", chunked=chunked)
    assert status == 413
    assert sent < 64 * MiB


DEEP = 100_000
BAD_DEALS = [
    (deal(closed_at="9999-12-31T23:30:00Z"), "closed_at"),
    (deal(closed_at="0001-01-01T00:00:00+05:00"), "closed_at"),
    (deal(closed_at="1999-12-31"), "closed_at"),
    (deal(closed_at="2028-01-01T00:00:00Z"), "closed_at"),  # more than a year ahead
    (deal(name="Acme\x00renewal"), "name"),
    (deal(deal_id="CRM-\x001"), "deal_id"),
    (deal(source="web\x00inar"), "source"),
    (deal(notes={"quote": ["they said \x00 this"]}), "notes"),  # a field we do not even keep
]


@pytest.mark.parametrize(("payload", "field"), BAD_DEALS)
def test_bad_dates_and_nul_characters_are_400_naming_the_field(harness, payload, field):
    reply = harness.deal_closed(payload)
    assert reply.status == 400, reply.body
    assert reply.json()["field"] == field and field in reply.json()["error"]
    with session_scope(harness.rt.session_factory) as s:
        assert s.scalars(select(Deal)).all() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"deal_id": "CRM-1", "name": ' + b"[" * DEEP + b"]" * DEEP + b"}", "name"),
        (b"[" * DEEP + b"]" * DEEP, "body"),
        (b'{"deal_id": "CRM-1", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}", "extra"),
        (b'{"name": "raw \x00 byte", "deal_id": "CRM-1"}', "name"),
    ],
    ids=["100000-deep-field", "100000-deep-array", "5000-deep", "raw-nul"],
)
def test_deep_json_and_raw_nul_are_400_not_500(harness, body, field):
    reply = harness.deal_closed(body)
    assert reply.status == 400, reply.body
    assert reply.json()["field"] == field


def test_the_command_line_refuses_the_same_close_dates(cli_env, session_factory):
    base = ["deal-closed", "--deal-id", "CRM-7", "--name", "Acme", "--outcome", "lost"]
    base += ["--owner-email", "ana@example.com"]
    for closed_at in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:30:00Z", "1999-06-01"):
        out = closeloop(cli_env, *base, "--closed-at", closed_at)
        assert out.returncode == 2, out.stderr
        assert "closed_at" in out.stderr and "Traceback" not in out.stderr
    with session_scope(session_factory) as s:
        assert s.scalars(select(Deal)).all() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_gunicorn_reads_chunked_deals_and_caps_slack_bodies(cli_env, session_factory):
    """The production server (`closeloop run`, gunicorn) decodes chunks itself: the same
    bodies get the same answers there, and its worker does not grow."""
    port = _free_port()
    env = {**cli_env, "PORT": str(port), "WEB_CONCURRENCY": "1", "DEALS_WEBHOOK_SECRET": SECRET}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run", "--no-scheduler"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.2)
        (worker,) = _children(proc.pid)
        now = datetime.now(UTC)
        body = json.dumps(deal(closed_at=now.isoformat())).encode()
        status, answer = _post_chunked(
            base, "/hooks/deal-closed", body, _signed_deal(body, int(now.timestamp()))
        )
        assert (status, answer.get("deal_id")) == (201, "CRM-1"), answer
        body = json.dumps(deal(deal_id="CRM-2", closed_at="0001-01-01T00:00:00+05:00")).encode()
        status, answer = _post_chunked(
            base, "/hooks/deal-closed", body, _signed_deal(body, int(now.timestamp()))
        )
        assert (status, answer.get("field")) == (400, "closed_at"), answer
        before = _rss(worker)
        for chunked in (False, True):
            status, sent = _send_huge(base, "/slack/events", chunked=chunked)
            assert status == 413 and sent < 64 * MiB
        assert _rss(worker) - before < 40 * MiB
        assert _children(proc.pid) == [worker]  # the same worker, still serving
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    with session_scope(session_factory) as s:
        assert s.scalars(select(Deal.external_id)).all() == ["CRM-1"]


# --- the win/loss modal: one close-date range --------------------------------------------


def _winloss_modal(h, user_id: str) -> dict:
    h.command(user_id, "", command="/winloss")
    return h.slack.calls_to("views.open")[-1].params["view"]


@pytest.mark.parametrize("user_id", ["UANA", "UBEN"])  # east and west of UTC
@pytest.mark.parametrize("closed_on", ["0001-01-01", "1999-12-31", "2028-01-01"])
def test_the_modal_refuses_a_close_before_2000_or_far_ahead_inline(harness, user_id, closed_on):
    h = harness
    modal = _winloss_modal(h, user_id)
    values = fill(
        modal,
        deal_name="Acme renewal",
        outcome="lost",
        reason=QUOTE,
        reason_category="Price",
        insight="Lead with ROI",
        closed_on=closed_on,
    )
    reply = submit_winloss(h, user_id, modal, values)
    assert reply.status == 200, reply.body
    answer = reply.json()
    assert answer.get("response_action") == "errors" and "closed_on" in answer["errors"], answer
    with session_scope(h.rt.session_factory) as s:
        assert s.scalars(select(WinLossEntry)).all() == []
    ok = submit_winloss(h, user_id, modal, {**values, "closed_on": "2000-01-01"})
    assert ok.status == 200 and ok.body == "", ok.body  # the first day of the range is fine


# --- NUL characters from Slack: removed wherever text comes in ----------------------------


def test_a_nul_in_a_modal_is_removed_before_it_is_stored(harness):
    h = harness
    modal = _winloss_modal(h, "UANA")
    values = fill(
        modal,
        deal_name="Acme\x00 renewal",
        outcome="lost",
        reason=QUOTE.replace("great", "gr\x00eat"),
        reason_category="Price",
        insight="Lead\x00 with ROI",
        competitor_new="Competitor\x00 X",
        source="web\x00inar",
    )
    reply = submit_winloss(h, "UANA", modal, values)
    assert reply.status == 200 and reply.body == "", reply.body
    with session_scope(h.rt.session_factory) as s:
        entry = s.scalars(select(WinLossEntry)).one()
        assert entry.deal.name == "Acme renewal" and entry.deal.source == "webinar"
        assert entry.reason == QUOTE and entry.insight == "Lead with ROI"
        assert entry.competitor is not None and entry.competitor.name == "Competitor X"


def test_a_nul_in_a_dm_answer_is_removed_before_it_is_stored(harness):
    h = harness
    h.clock.set(FRI_1500_UTC)
    tick(h.rt)  # this week's prompt
    assert h.dm("UANA", "- the\x00 webinar\n- cold\x00 email\n- more\x00 demos").status == 200
    with session_scope(h.rt.session_factory) as s:
        answer = s.scalars(select(FeedbackAnswer)).one()
        assert (answer.worked, answer.fell_flat, answer.insight) == (
            "the webinar",
            "cold email",
            "more demos",
        )
    assert "Got it" in all_text(dms_to(h.slack, "UANA")[-1].params)


def test_a_nul_in_a_slash_command_is_removed(harness):
    reply = harness.command("UANA", "li\x00st", command="/winloss")
    assert reply.status == 200
    assert "Nothing waiting" in reply.body, reply.body  # /winloss list, not the help


@pytest.mark.parametrize("path", ["/slack/events", "/hooks/deal-closed"])
def test_malformed_chunked_framing_is_400(harness, path):
    host, port = harness.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".encode()
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer


def test_a_signed_chunked_slack_request_is_served(harness):
    body = json.dumps({"type": "url_verification", "challenge": "abc", "token": "x"}).encode()
    ts = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": sign(body, ts),
    }
    status, answer = _post_chunked(harness.url, "/slack/events", body, headers)
    assert (status, answer) == (200, {"challenge": "abc"})
