import subprocess
import sys

import pytest

from bot.config import ConfigError, Settings, parse_weekly_time

BASE = {
    "SLACK_BOT_TOKEN": "xoxb-1",
    "SLACK_SIGNING_SECRET": "s",
    "FEEDBACK_CHANNEL": "C123",
    "SALES_USERS": "U1, U2,U1",
    "MARKETING_USERGROUP": "S99",
}


def settings(**changes):
    env = {**BASE, **changes}
    return Settings.from_env({k: v for k, v in env.items() if v is not None})


def test_defaults_and_parsing():
    s = settings()
    assert s.sales.users == ("U1", "U2")
    assert s.marketing.usergroup == "S99"
    assert str(s.prompt_schedule) == "fri 16:00"
    assert str(s.reminder_schedule) == "mon 10:00"
    assert s.ack_emoji == "white_check_mark"
    assert s.database_url == "sqlite:///closeloop.db"
    assert s.slack_api_url == "https://slack.com/api/"
    assert s.port == 3000 and not s.socket_mode


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/api", "http://127.0.0.1:9/api/"])
def test_api_url_with_or_without_trailing_slash(url):
    assert settings(SLACK_API_URL=url).slack_api_url == "http://127.0.0.1:9/api/"


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"SLACK_BOT_TOKEN": None}, "SLACK_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxp-user"}, "SLACK_BOT_TOKEN"),
        ({"SLACK_SIGNING_SECRET": None}, "SLACK_SIGNING_SECRET"),
        ({"SLACK_APP_TOKEN": "xoxb-wrong"}, "SLACK_APP_TOKEN"),
        ({"FEEDBACK_CHANNEL": None}, "FEEDBACK_CHANNEL"),
        ({"FEEDBACK_CHANNEL": "#marketing"}, "FEEDBACK_CHANNEL"),
        ({"SALES_USERS": None}, "SALES_USERS"),
        ({"SALES_USERS": "alice,bob"}, "SALES_USERS"),
        ({"SALES_USERGROUP": "S1"}, "SALES_USERGROUP"),  # both given
        ({"SALES_USERS": None, "SALES_USERGROUP": "sales-team"}, "SALES_USERGROUP"),
        ({"LOG_LEVEL": "x", "WINLOSS_CHANNEL": "#wins"}, "WINLOSS_CHANNEL"),
        ({"WINLOSS_REMINDER_HOURS": "30"}, "WINLOSS_REMINDER_HOURS"),
        ({"WINLOSS_DEADLINE_HOURS": "soon"}, "WINLOSS_DEADLINE_HOURS"),
        ({"SALES_MANAGERS": "bob"}, "SALES_MANAGERS"),
        ({"ADMIN_USERS": "U1,@alice"}, "ADMIN_USERS"),
        ({"DEFAULT_TIMEZONE": "Mars/Base"}, "DEFAULT_TIMEZONE"),
        ({"MARKETING_USERGROUP": "marketing"}, "MARKETING_USERGROUP"),
        ({"PROMPT_SCHEDULE": "friday at four"}, "PROMPT_SCHEDULE"),
        ({"REMINDER_SCHEDULE": "mon 25:00"}, "REMINDER_SCHEDULE"),
        ({"ACK_EMOJI": "white check"}, "ACK_EMOJI"),
        ({"PORT": "http"}, "PORT"),
        ({"SLACK_API_URL": "slack.com"}, "SLACK_API_URL"),
        ({"HUBSPOT_CLIENT_SECRET": "s"}, "HUBSPOT_ACCESS_TOKEN"),
        ({"HUBSPOT_ACCESS_TOKEN": "pat-na1-x"}, "HUBSPOT_CLIENT_SECRET"),
        ({"HUBSPOT_API_URL": "api.hubapi.com"}, "HUBSPOT_API_URL"),
        ({"HUBSPOT_WEBHOOK_URL": "/hooks/hubspot"}, "HUBSPOT_WEBHOOK_URL"),
    ],
)
def test_bad_setting_is_one_line_naming_it(change, names):
    with pytest.raises(ConfigError) as err:
        settings(**change)
    message = str(err.value)
    assert names in message and "\n" not in message


def test_hubspot_is_off_until_its_secret_and_token_are_both_set():
    assert not settings().hubspot_configured
    assert settings().hubspot_api_url == "https://api.hubapi.com"
    on = settings(
        HUBSPOT_CLIENT_SECRET="s",
        HUBSPOT_ACCESS_TOKEN="pat-na1-x",
        HUBSPOT_API_URL="http://127.0.0.1:9/",
        HUBSPOT_WEBHOOK_URL="https://bot.example.com/crm/hs",
    )
    assert on.hubspot_configured and on.hubspot_api_url == "http://127.0.0.1:9"
    assert on.hubspot_webhook_url == "https://bot.example.com/crm/hs"
    assert "pat-na1" not in repr(on)


def test_socket_mode_needs_no_signing_secret():
    s = settings(SLACK_SIGNING_SECRET=None, SLACK_APP_TOKEN="xapp-1")
    assert s.socket_mode


def test_repr_hides_secrets():
    s = settings(SLACK_BOT_TOKEN="xoxb-secret-123", DATABASE_URL="postgresql://u:pw@h/db")
    assert "secret" not in repr(s) and "pw" not in repr(s)


def test_weekly_time_accepts_long_day_names():
    assert str(parse_weekly_time("X", "Friday 9:05")) == "fri 09:05"


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        settings(FEEDBACK_CHANNEL="#marketing", PORT="http", DIGEST_TIME="9am", CURRENCY="$")
    names = [line.split("=")[0].split()[0] for line in err.value.lines]
    assert names == ["FEEDBACK_CHANNEL", "PORT", "DIGEST_TIME", "CURRENCY"]


def test_database_only_commands_need_no_slack_settings():
    s = Settings.from_env({"DATABASE_URL": "sqlite:///x.db"}, slack=False)
    assert s.database_url == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="DIGEST_TIMEZONE"):  # what they use is still checked
        Settings.from_env({"DIGEST_TIMEZONE": "Mars/Base"}, slack=False)


def test_cli_missing_setting_stops_with_one_line(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "CLOSELOOP_ENV_FILE": str(tmp_path / "none.env"),
        **{k: v for k, v in BASE.items() if k != "SLACK_BOT_TOKEN"},
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "SLACK_BOT_TOKEN" in proc.stderr and "Traceback" not in proc.stderr


def test_reminder_hour_follows_a_shorter_deadline():
    s = settings(WINLOSS_DEADLINE_HOURS="12")
    assert (s.winloss_deadline_hours, s.winloss_reminder_hours) == (12, 8)
    assert settings().winloss_reminder_hours == 20


def test_admin_users_are_optional_and_deduplicated():
    assert settings().admin_users == ()
    assert settings(ADMIN_USERS=" ").admin_users == ()
    assert settings(ADMIN_USERS="U1, W2,U1").admin_users == ("U1", "W2")


def test_socket_mode_serves_http_when_a_crm_may_call():
    """In Socket Mode, HTTP is only for the hooks: served once any of them is configured."""
    socket = {"SLACK_SIGNING_SECRET": None, "SLACK_APP_TOKEN": "xapp-1"}
    assert not settings(**socket).serves_webhooks
    assert settings(**socket, DEALS_WEBHOOK_SECRET="w").serves_webhooks
    hubspot = {"HUBSPOT_CLIENT_SECRET": "s", "HUBSPOT_ACCESS_TOKEN": "pat-na1-x"}
    assert settings(**socket, **hubspot).serves_webhooks
    salesforce = {"SALESFORCE_ORG_ID": "00D000000000062", "SALESFORCE_WEBHOOK_SECRET": "t" * 20}
    assert settings(**socket, **salesforce).serves_webhooks
