"""`closeloop check` and the checks `closeloop run` makes at start, run as an operator runs
them, against the fake Slack (which enforces the manifest's scopes)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

from tests.conftest import closeloop
from tests.test_cli import _free_port

READS = {"auth.test", "conversations.info", "usergroups.users.list", "users.info"}


def lines(out: subprocess.CompletedProcess) -> list[str]:
    return (out.stdout + out.stderr).strip().splitlines()


def problems(out: subprocess.CompletedProcess) -> list[str]:
    return [line for line in lines(out) if line.startswith("closeloop check: problem: ")]


def only_reads(fake_slack) -> None:
    called = {c.method for c in fake_slack.calls}
    assert called <= READS, called - READS


def test_all_is_well(cli_env, fake_slack):
    out = closeloop({**cli_env, "DEALS_WEBHOOK_SECRET": "s3cret"}, "check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert problems(out) == []
    assert all(line.startswith("closeloop check: ") for line in lines(out))
    text = out.stdout
    assert "ok: SLACK_BOT_TOKEN is valid" in text
    assert "ok: the token has the" in text
    assert "ok: FEEDBACK_CHANNEL=CMKTG (also WINLOSS_CHANNEL" in text
    assert "ok: SALES_USERGROUP=SSALES has 2 member(s)" in text
    assert "ok: MARKETING_USERS: 1 person(s) found" in text
    assert lines(out)[-1] == "closeloop check: all is well"
    assert fake_slack.calls_to("conversations.info") and fake_slack.calls_to("users.info")
    only_reads(fake_slack)


def test_an_unset_webhook_secret_is_a_warning_only(cli_env, fake_slack):
    out = closeloop(cli_env, "check")
    assert out.returncode == 0
    (warning,) = [line for line in lines(out) if ": warning: " in line]
    assert "DEALS_WEBHOOK_SECRET is not set" in warning and "503" in warning


def test_each_wrong_id_is_named_on_its_own_line(cli_env, fake_slack):
    fake_slack.add_channel("CAWAY", name="win-loss", is_member=False)
    fake_slack.add_channel("CSECRET", name="digest", is_private=True, is_member=False)
    fake_slack.add_user("UGONE", deleted=True)
    fake_slack.add_user("UROBOT", is_bot=True)
    env = {
        **cli_env,
        "FEEDBACK_CHANNEL": "C0WRONG",
        "WINLOSS_CHANNEL": "CAWAY",
        "WINLOSS_ESCALATION_CHANNEL": "CAWAY",
        "DIGEST_CHANNEL": "CSECRET",
        "SALES_USERGROUP": "S0NOPE",
        "SALES_MANAGERS": "U0NOPE,UGONE,UROBOT,UANA",
        "DEALS_WEBHOOK_SECRET": "s3cret",
    }
    out = closeloop(env, "check")
    assert out.returncode == 1
    found = problems(out)
    assert len(found) == 7, found

    def line_with(key: str) -> str:
        (line,) = [line for line in found if key in line]
        return line

    assert "no such channel (channel_not_found)" in line_with("FEEDBACK_CHANNEL=C0WRONG")
    away = line_with(
        "WINLOSS_CHANNEL=CAWAY (also WINLOSS_ESCALATION_CHANNEL, LEAD_ESCALATION_CHANNEL"
    )
    assert "the bot is not in #win-loss" in away and "/invite @Closeloop" in away
    # a private channel the bot is not in is invisible to it, as in Slack
    assert "channel_not_found" in line_with("DIGEST_CHANNEL=CSECRET")
    assert "no_such_subteam" in line_with("SALES_USERGROUP=S0NOPE")
    assert "no such user (user_not_found)" in line_with("SALES_MANAGERS: U0NOPE")
    assert "is deactivated" in line_with("SALES_MANAGERS: UGONE")
    assert "is a bot" in line_with("SALES_MANAGERS: UROBOT")
    assert not [line for line in found if "UANA" in line]
    assert lines(out)[-1] == "closeloop check: 7 problem(s) found"
    only_reads(fake_slack)


def test_a_revoked_token_is_named_and_nothing_else_is_tried(cli_env, fake_slack):
    fake_slack.revoke_token()
    out = closeloop(cli_env, "check")
    assert out.returncode == 1
    (problem,) = problems(out)
    assert "Slack refused SLACK_BOT_TOKEN (token_revoked)" in problem
    assert "reinstall the app" in problem
    assert [c.method for c in fake_slack.calls] == ["auth.test"]


def test_a_wrong_token_is_invalid_auth(cli_env, fake_slack):
    out = closeloop({**cli_env, "SLACK_BOT_TOKEN": "xoxb-not-the-one"}, "check")
    assert out.returncode == 1
    (problem,) = problems(out)
    assert "(invalid_auth)" in problem and "copy the Bot User OAuth Token" in problem
    assert "xoxb-not-the-one" not in out.stdout + out.stderr


def test_a_missing_scope_says_add_it_and_reinstall(cli_env, fake_slack):
    fake_slack.granted = fake_slack.granted - {"files:write", "channels:read"}
    out = closeloop(cli_env, "check")
    assert out.returncode == 1
    # one line a missing scope; the channel check it stops is not another line
    channels, files = problems(out)
    assert channels.startswith("closeloop check: problem: scope channels:read is missing")
    assert "scope files:write is missing (for files.getUploadURLExternal" in files
    for line in (files, channels):
        assert "OAuth & Permissions" in line and "reinstall the app" in line
    (refused,) = fake_slack.calls_to("conversations.info", include_failed=True)
    assert refused.response["error"] == "missing_scope"


def test_a_network_error_is_not_a_rejected_token(cli_env, fake_slack):
    port = _free_port()  # nothing listens there
    env = {**cli_env, "SLACK_API_URL": f"http://127.0.0.1:{port}/api/"}
    out = closeloop(env, "check")
    assert out.returncode == 1
    (problem,) = problems(out)
    assert "network error" in problem and f"SLACK_API_URL=http://127.0.0.1:{port}/api/" in problem
    assert "connection refused" in problem
    assert "SLACK_BOT_TOKEN" not in problem and out.stderr == ""  # no log line besides


def test_an_unknown_host_is_a_network_error(cli_env, fake_slack):
    env = {**cli_env, "SLACK_API_URL": "http://closeloop-no-such-host.invalid/api/"}
    out = closeloop(env, "check")
    assert out.returncode == 1
    (problem,) = problems(out)
    assert "network error" in problem and "closeloop-no-such-host.invalid" in problem
    assert "DNS" in problem


def test_a_server_that_never_answers_is_a_timeout(cli_env, fake_slack):
    fake_slack.fail_next("auth.test", delay=40)  # far longer than the checks' 10 s timeout
    started = time.monotonic()
    out = closeloop(cli_env, "check")
    assert out.returncode == 1 and time.monotonic() - started < 30
    (problem,) = problems(out)
    assert "network error" in problem and "timeout" in problem


# --- closeloop run ------------------------------------------------------------------------


def test_run_refuses_to_start_naming_each_wrong_id(cli_env, fake_slack):
    env = {
        **cli_env,
        "FEEDBACK_CHANNEL": "C0WRONG",
        "SALES_USERGROUP": "",
        "SALES_USERS": "U0NOPE,U0ALSO",
        "PORT": str(_free_port()),
    }
    out = closeloop(env, "run")
    assert out.returncode == 2
    found = problems(out)
    assert len(found) == 3, out.stderr
    for wrong in ("FEEDBACK_CHANNEL=C0WRONG", "SALES_USERS: U0NOPE", "SALES_USERS: U0ALSO"):
        assert sum(wrong in line for line in found) == 1
    assert out.stderr.strip().splitlines()[-1].startswith("closeloop: not started")
    assert "Traceback" not in out.stderr
    only_reads(fake_slack)  # nothing was sent


def test_run_refuses_to_start_without_a_scope(cli_env, fake_slack):
    fake_slack.granted = fake_slack.granted - {"files:write"}
    out = closeloop(cli_env, "run", "--no-scheduler")
    assert out.returncode == 2
    (problem,) = problems(out)
    assert "scope files:write is missing" in problem
    only_reads(fake_slack)


def test_run_refuses_to_start_with_a_bot_outside_the_feedback_channel(cli_env, fake_slack):
    fake_slack.add_channel("CMKTG", name="marketing-feedback", is_member=False)
    out = closeloop(cli_env, "run", "--no-scheduler")
    assert out.returncode == 2
    (problem,) = problems(out)
    assert "FEEDBACK_CHANNEL=CMKTG" in problem and "/invite @Closeloop" in problem


def test_run_tries_an_unreachable_slack_a_few_times_then_refuses(cli_env, fake_slack):
    port = _free_port()
    env = {**cli_env, "SLACK_API_URL": f"http://127.0.0.1:{port}/api/"}
    started = time.monotonic()
    out = closeloop(env, "run", "--no-scheduler")
    assert out.returncode == 2
    assert time.monotonic() - started >= 3  # it waited 1 s, then 2 s, between tries
    (problem,) = problems(out)
    assert "network error" in problem and "connection refused" in problem
    assert "Traceback" not in out.stderr


def test_run_starts_once_slack_answers_within_its_retries(cli_env, fake_slack):
    """Slack unreachable for the first try (a dropped connection), then fine: it starts."""
    port = _free_port()
    fake_slack.fail_next("auth.test", drop=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        env={**cli_env, "PORT": str(port), "WEB_CONCURRENCY": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # started: a worker answers (the port alone is the arbiter's)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.2)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)  # gunicorn's graceful stop takes up to 20 s
    assert "problem" not in out, out
    assert len(fake_slack.calls_to("auth.test", include_failed=True)) >= 2
