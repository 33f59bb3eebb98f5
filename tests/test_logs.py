"""What an operator reads: one format for every line (text, or JSON with LOG_FORMAT=json), a
line for each request and for each thing Closeloop did (ids, never what people wrote), and none
of the libraries' noise."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from bot.db import session_scope
from bot.logs import event_on_commit
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, closeloop
from tests.harness import tick
from tests.test_cli import _free_port
from tests.test_loop_scenario import FRI_1500_UTC, dms_to, stored


def _serve_and_stop(env: dict, port: int) -> str:
    """`closeloop run` in HTTP mode: /healthz, a forged Slack request, then SIGTERM; all it
    printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        env={**env, "PORT": str(port), "WEB_CONCURRENCY": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz?probe=1", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.2)
        forged = urllib.request.Request(
            base + "/slack/events",
            data=b"token=x&text=THE-BODY-OF-A-FORGED-REQUEST",
            headers={
                "X-Slack-Request-Timestamp": str(int(time.time())),
                "X-Slack-Signature": "v0=0",
            },
        )
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(forged, timeout=5)
        time.sleep(0.5)  # the access line is written after the answer
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def test_json_logs_are_one_object_a_line_with_requests_and_no_noise(cli_env):
    out = _serve_and_stop({**cli_env, "LOG_FORMAT": "json"}, _free_port())
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]  # every line
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "closeloop.access"]
    assert {(a["method"], a["path"], a["status"]) for a in access} >= {
        ("GET", "/healthz", "200"),  # without its query string
        ("POST", "/slack/events", "401"),
    }
    assert all(isinstance(a["duration_ms"], float) for a in access)
    text = out
    assert "THE-BODY-OF-A-FORGED-REQUEST" not in text  # a bad signature, logged without body
    assert any("Invalid request signature" in line["message"] for line in lines)
    assert any(line["message"].startswith("serving HTTP on port") for line in lines)
    assert any(line["logger"].startswith("gunicorn") for line in lines)  # gunicorn's, as JSON
    assert "will be unused" not in text and "Listening at:  (" not in text
    assert "matplotlib" not in text
    assert BOT_TOKEN not in text and SIGNING_SECRET not in text


def test_a_log_format_that_does_not_exist_is_one_line(cli_env):
    out = closeloop({**cli_env, "LOG_FORMAT": "xml"}, "migrate")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "LOG_FORMAT" in out.stderr


def test_what_closeloop_did_is_logged_with_ids_and_never_the_text(harness, caplog):
    h, slack, clock = harness, harness.slack, harness.clock
    caplog.set_level(logging.INFO, logger="closeloop.events")
    clock.set(FRI_1500_UTC)
    tick(h.rt)
    prompt = dms_to(slack, "UANA")[0]
    h.dm("UANA", "- SECRET-WORKED\n- SECRET-FLAT\n- SECRET-INSIGHT")
    post = [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] == "CMKTG"][0]
    h.react("UMIA", "CMKTG", post.response["ts"], "white_check_mark")
    events = {r.event: r for r in caplog.records if r.name == "closeloop.events"}
    assert {"prompt_sent", "answer_stored", "acknowledgement_recorded"} <= set(events)
    answer = events["answer_stored"]
    assert answer.user == "UANA" and answer.source == "dm" and answer.edited is False
    assert all("SECRET" not in r.getMessage() for r in caplog.records)
    assert stored(slack, prompt)  # (the DM exists: the prompt was really sent)


def test_nothing_is_logged_for_a_transaction_that_rolled_back(session_factory, caplog):
    caplog.set_level(logging.INFO, logger="closeloop.events")
    with pytest.raises(RuntimeError):
        with session_scope(session_factory) as s:
            event_on_commit(s, "answer_stored", "answer 1 stored")
            raise RuntimeError("the write failed")
    with session_scope(session_factory) as s:
        event_on_commit(s, "answer_stored", "answer 2 stored")
    assert [r.getMessage() for r in caplog.records if r.name == "closeloop.events"] == [
        "answer 2 stored"
    ]
