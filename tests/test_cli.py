"""The `closeloop` command as an operator runs it, against the fake Slack."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import BOT_TOKEN, SIGNING_SECRET, closeloop
from tests.harness import sign


def test_prompt_now_sends_this_weeks_prompt_once(cli_env, fake_slack):
    first = closeloop(cli_env, "prompt", "--now", "--user", "UANA")
    assert first.returncode == 0, first.stderr
    assert "UANA: prompted" in first.stdout
    dms = [c for c in fake_slack.calls_to("chat.postMessage") if c.params["channel"] == "UANA"]
    assert len(dms) == 1
    again = closeloop(cli_env, "prompt", "--now")
    assert "UANA: already prompted this week" in again.stdout
    assert "UBEN: prompted" in again.stdout
    dms = [c for c in fake_slack.calls_to("chat.postMessage") if c.params["channel"] == "UANA"]
    assert len(dms) == 1


def test_prompt_now_for_someone_outside_sales(cli_env, fake_slack):
    out = closeloop(cli_env, "prompt", "--now", "--user", "UZED")
    assert "UZED: not in the sales team" in out.stdout
    assert fake_slack.calls_to("chat.postMessage") == []


def test_migrate_then_unreachable_database_is_one_line(cli_env, tmp_path):
    assert closeloop(cli_env, "migrate").returncode == 0
    bad = {**cli_env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    out = closeloop(bad, "migrate")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "DATABASE_URL" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_serves_http_with_healthz_and_verified_events(cli_env, fake_slack, tmp_path):
    port = _free_port()
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        # A blank WEB_CONCURRENCY (a .env line left empty) means the default; gunicorn alone
        # would stop on it with a traceback.
        env={**cli_env, "PORT": str(port), "WEB_CONCURRENCY": "", "HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "bot did not start"
                time.sleep(0.2)
        body = json.dumps({"type": "url_verification", "challenge": "abc", "token": "x"}).encode()
        ts = int(time.time())
        req = urllib.request.Request(
            base + "/slack/events",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Slack-Request-Timestamp": str(ts),
                "X-Slack-Signature": sign(body, ts),
            },
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read())["challenge"] == "abc"
        req = urllib.request.Request(
            base + "/slack/events",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Slack-Request-Timestamp": str(ts),
                "X-Slack-Signature": "v0=forged",
            },
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 401
        assert fake_slack.calls_to("auth.test"), "the token is checked at start-up"
        # gunicorn's control socket (one path per user, which a second bot would take over)
        # is not opened.
        assert not (home / ".gunicorn").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert BOT_TOKEN not in out and SIGNING_SECRET not in out


def test_socket_mode_with_a_rejected_app_token_is_one_line(cli_env, fake_slack):
    env = {**cli_env, "SLACK_APP_TOKEN": "xapp-1-revoked"}
    out = closeloop(env, "run", "--no-scheduler")
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("closeloop: ") and "SLACK_APP_TOKEN" in last
    assert "Traceback" not in out.stderr and "xapp-1-revoked" not in out.stderr
    assert fake_slack.calls_to("apps.connections.open", include_failed=True)


@pytest.mark.parametrize(
    "name,value", [("WEB_CONCURRENCY", "two"), ("WEB_THREADS", "0"), ("WEB_CONCURRENCY", "²")]
)
def test_run_with_a_bad_worker_count_is_one_line(cli_env, fake_slack, name, value):
    out = closeloop({**cli_env, name: value}, "run", "--no-scheduler")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"closeloop: {name}={value!r} must be a whole number from 1 to 256"
    )
    assert "Traceback" not in out.stderr
