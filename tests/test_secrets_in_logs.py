"""Tokens and secrets never appear in logs or error messages."""

from __future__ import annotations

import logging
from dataclasses import fields

from bot.config import SECRET_SETTINGS, Settings
from bot.logs import RedactingFormatter, redact
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, closeloop


def test_redact_tokens_secrets_and_url_passwords():
    text = (
        f"token {BOT_TOKEN} app xapp-1-A0-123-abc user xoxp-9-9 "
        "db postgresql://bob:hunter2@db/x secret s3cr3t-value"
    )
    out = redact(text, ["s3cr3t-value"])
    for leaked in (BOT_TOKEN, "xapp-1-A0-123-abc", "xoxp-9-9", "hunter2", "s3cr3t-value"):
        assert leaked not in out
    assert "xoxb-***" in out and "bob:***@db" in out


def test_formatter_redacts_messages_and_tracebacks():
    formatter = RedactingFormatter("%(message)s", ["webhook-secret-123"])
    try:
        raise RuntimeError(f"failed with {BOT_TOKEN} and webhook-secret-123")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "boom %s", (BOT_TOKEN,), sys.exc_info()
        )
    out = formatter.format(record)
    assert BOT_TOKEN not in out and "webhook-secret-123" not in out and "Traceback" in out


def test_debug_logs_of_a_real_run_hold_no_secret(cli_env, fake_slack):
    env = {
        **cli_env,
        "LOG_LEVEL": "DEBUG",
        "DEALS_WEBHOOK_SECRET": "deal-hook-secret-42",
        "SLACK_APP_TOKEN": "xapp-1-A111-222-secretpart",
    }
    fake_slack.fail_next("chat.postMessage", error="ratelimited", retry_after=1)
    fake_slack.fail_next("users.info", error="invalid_auth")
    result = closeloop(env, "prompt", "--now")
    output = result.stdout + result.stderr
    assert "DEBUG" in output  # the run really logged at DEBUG, Slack calls included
    for secret in (BOT_TOKEN, SIGNING_SECRET, "deal-hook-secret-42", "secretpart"):
        assert secret not in output
    bad = closeloop({**env, "SLACK_BOT_TOKEN": "xoxb-wrong-token-value"}, "prompt", "--now")
    assert "xoxb-wrong-token-value" not in bad.stdout + bad.stderr


def test_every_token_and_secret_setting_is_redacted():
    secret_fields = [
        f.name.upper()
        for f in fields(Settings)
        if f.name.endswith(("_token", "_secret", "_password"))
    ]
    assert secret_fields and set(secret_fields) <= set(SECRET_SETTINGS)
