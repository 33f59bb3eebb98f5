"""`closeloop prompt --now --dry-run` and `closeloop digest --post --dry-run`, as an operator
runs them: they print who would get what and send nothing (the fake Slack's call log and the
outbox table both stay empty of it), and store nothing either."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from bot.db import session_scope
from bot.models import Digest, Member, OutboxMessage, Prompt
from tests.conftest import closeloop
from tests.test_digest import build_data

# Slack methods that only read; a dry run may ask Slack who is in sales and their time zones.
READS = {"usergroups.users.list", "users.info", "users.list", "auth.test", "team.info"}


def count(session_factory, model) -> int:
    with session_scope(session_factory) as s:
        return s.scalar(select(func.count()).select_from(model))


def this_monday(tz: str) -> str:
    today = datetime.now(ZoneInfo(tz)).date()
    return str(today - timedelta(days=today.weekday()))


def test_prompt_now_dry_run_names_who_would_be_prompted_and_sends_nothing(
    cli_env, fake_slack, session_factory
):
    out = closeloop(cli_env, "prompt", "--now", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # each rep, this week in their own time zone (the week may differ either side of midnight)
    for user, tz in (("UANA", "Europe/Berlin"), ("UBEN", "America/Los_Angeles")):
        (line,) = [x for x in lines if x.startswith(f"{user}:")]
        match = re.fullmatch(rf"{user}: would get the prompt for the week of (\S+) \({tz}\)", line)
        assert match, line
        assert match[1] in (this_monday(tz), str(datetime.now(ZoneInfo(tz)).date()))
    assert (
        lines[-1]
        == "dry run: 2 would be prompted, 0 already had this week's prompt; nothing was sent"
    )
    assert {c.method for c in fake_slack.calls} <= READS
    assert fake_slack.calls_to("chat.postMessage", include_failed=True) == []
    assert count(session_factory, OutboxMessage) == 0
    assert count(session_factory, Prompt) == 0
    assert count(session_factory, Member) == 0  # not even the roster is stored

    # After Ana is really prompted, the dry run says so; then the real run prompts Ben only.
    assert closeloop(cli_env, "prompt", "--now", "--user", "UANA").returncode == 0
    calls = len(fake_slack.calls)
    out = closeloop(cli_env, "prompt", "--now", "--dry-run", "--user", "UANA", "UBEN", "UZED")
    assert out.returncode == 0, out.stderr
    assert "UANA: already prompted this week; would not be prompted again" in out.stdout
    assert re.search(r"^UBEN: would get the prompt for the week of ", out.stdout, re.M)
    assert "UZED: not in the sales team" in out.stdout
    assert out.stdout.splitlines()[-1].startswith("dry run: 1 would be prompted, 1 already")
    assert {c.method for c in fake_slack.calls[calls:]} <= READS
    assert count(session_factory, OutboxMessage) == 1  # Ana's, from the real run
    real = closeloop(cli_env, "prompt", "--now")
    assert "UBEN: prompted" in real.stdout and "UANA: already prompted" in real.stdout


def test_digest_post_dry_run_prints_what_would_be_posted_and_where_and_sends_nothing(
    cli_env, fake_slack, session_factory
):
    with session_scope(session_factory) as s:
        build_data(s)
    text = closeloop(cli_env, "digest", "--month", "2026-10")
    assert text.returncode == 0, text.stderr

    out = closeloop(cli_env, "digest", "--month", "2026-10", "--post", "--dry-run")
    assert out.returncode == 0, out.stderr
    first, _, rest = out.stdout.partition("\n")
    assert first == (
        "dry run: would post the 2026-10 digest to CMKTG, its chart in the thread; "
        "nothing was sent. It would say:"
    )
    assert rest == text.stdout  # exactly what `closeloop digest` prints for the month
    assert fake_slack.calls == []
    assert count(session_factory, OutboxMessage) == 0
    assert count(session_factory, Digest) == 0

    # Once it is really posted, the dry run says it would not be posted again.
    assert closeloop(cli_env, "digest", "--month", "2026-10", "--post").returncode == 0
    calls, queued = len(fake_slack.calls), count(session_factory, OutboxMessage)
    again = closeloop(cli_env, "digest", "--month", "2026-10", "--post", "--dry-run")
    assert again.returncode == 0, again.stderr
    assert "would not be posted again; nothing was sent" in again.stdout
    assert len(fake_slack.calls) == calls
    assert count(session_factory, OutboxMessage) == queued
