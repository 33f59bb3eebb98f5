"""`closeloop check` reports Pipedrive's state: off, or its API token tried against (the fake)
Pipedrive with one cheap read (``GET /users/me``); run as an operator runs it."""

from __future__ import annotations

import pytest

from tests.conftest import closeloop
from tests.fakepipedrive import FakePipedrive
from tests.test_check import lines, problems

TOKEN = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fake_pipedrive():
    fake = FakePipedrive(token=TOKEN)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def pipedrive_env(cli_env, fake_pipedrive, **changes):
    env = {
        **cli_env,
        "DEALS_WEBHOOK_SECRET": "s3cret",
        "PIPEDRIVE_WEBHOOK_USER": "closeloop",
        "PIPEDRIVE_WEBHOOK_PASSWORD": "webhook-password",
        "PIPEDRIVE_API_TOKEN": TOKEN,
        "PIPEDRIVE_API_URL": fake_pipedrive.url + "/api/v1",
    }
    env.update(changes)
    return env


def pipedrive_lines(out) -> list[str]:
    return [line for line in lines(out) if "Pipedrive" in line or "PIPEDRIVE" in line]


def test_pipedrive_off_is_said_once(cli_env, fake_slack):
    out = closeloop({**cli_env, "DEALS_WEBHOOK_SECRET": "s3cret"}, "check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert pipedrive_lines(out) == [
        "closeloop check: ok: Pipedrive is off (PIPEDRIVE_WEBHOOK_USER, "
        "PIPEDRIVE_WEBHOOK_PASSWORD and PIPEDRIVE_API_TOKEN unset)"
    ]


def test_a_valid_token_is_one_cheap_read(cli_env, fake_slack, fake_pipedrive):
    out = closeloop(pipedrive_env(cli_env, fake_pipedrive), "check")
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = pipedrive_lines(out)
    assert line.startswith(
        "closeloop check: ok: PIPEDRIVE_API_TOKEN is valid: Pipedrive user admin@example.com"
    )
    (call,) = fake_pipedrive.calls
    assert call.path == "/api/v1/users/me" and call.status == 200
    assert call.token_header == TOKEN and call.query == {}  # the header, never the URL


def test_a_refused_token_is_a_problem(cli_env, fake_slack, fake_pipedrive):
    env = pipedrive_env(cli_env, fake_pipedrive, PIPEDRIVE_API_TOKEN="not-the-token")
    out = closeloop(env, "check")
    assert out.returncode == 1
    (problem,) = problems(out)
    assert "Pipedrive refused PIPEDRIVE_API_TOKEN (Pipedrive 401: unauthorized access)" in problem
    assert "Personal preferences > API" in problem
    assert "not-the-token" not in out.stdout + out.stderr
    assert "webhook-password" not in out.stdout + out.stderr


def test_pipedrive_down_or_unreachable_is_a_warning(cli_env, fake_slack, fake_pipedrive):
    fake_pipedrive.down = True
    out = closeloop(pipedrive_env(cli_env, fake_pipedrive), "check")
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = pipedrive_lines(out)
    assert line.startswith("closeloop check: warning: Pipedrive's API could not be read")
    assert "503" in line

    nowhere = pipedrive_env(cli_env, fake_pipedrive, PIPEDRIVE_API_URL="http://127.0.0.1:9/v1")
    out = closeloop(nowhere, "check")
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = pipedrive_lines(out)
    assert line.startswith(
        "closeloop check: warning: Pipedrive's API could not be read (Pipedrive unreachable"
    )


def test_half_the_settings_is_refused_naming_the_missing_one(cli_env, fake_slack):
    out = closeloop({**cli_env, "PIPEDRIVE_API_TOKEN": TOKEN}, "check")
    assert out.returncode != 0
    assert "PIPEDRIVE_WEBHOOK_USER" in out.stderr


WORDS_KEY = "dcf558aac1ae4e8c4f849ba5e668430d8df9be12"  # in crm_samples/pipedrive/deal_fields


def test_writeback_fields_are_looked_for_one_line_each(cli_env, fake_slack, fake_pipedrive):
    env = pipedrive_env(
        cli_env,
        fake_pipedrive,
        PIPEDRIVE_WRITEBACK_REASON_FIELD=WORDS_KEY,
        PIPEDRIVE_WRITEBACK_CATEGORY_FIELD="f" * 40,
    )
    out = closeloop(env, "check")
    assert out.returncode == 1, out.stdout + out.stderr
    found = [line for line in pipedrive_lines(out) if "WRITEBACK" in line]
    assert found == [
        "closeloop check: ok: PIPEDRIVE_WRITEBACK_REASON_FIELD: the deal field "
        '"Customer\'s words (Closeloop)" (text) exists; entries are written back to it',
        f"closeloop check: problem: PIPEDRIVE_WRITEBACK_CATEGORY_FIELD={'f' * 40}: Pipedrive "
        "has no deal field with that key: create one (Company settings > Data fields > Deal, "
        "type Large text) and copy its API key; entries cannot be written back",
    ]
    assert [c.path for c in fake_pipedrive.calls] == ["/api/v1/users/me", "/api/v1/dealFields"]
    assert all(c.method == "GET" for c in fake_pipedrive.calls)


def test_lead_writeback_fields_are_custom_text_deal_fields(cli_env, fake_slack, fake_pipedrive):
    rating, kind_wrong, missing = "8f2b" + "0" * 36, "9e3c" + "0" * 36, "a" * 40
    fake_pipedrive.add_deal_field(rating, "Lead rating (Closeloop)", field_type="varchar")
    fake_pipedrive.add_deal_field(kind_wrong, "Lead stage", field_type="enum")
    env = pipedrive_env(cli_env, fake_pipedrive, PIPEDRIVE_WRITEBACK_LEAD_RATING_FIELD=rating)
    out = closeloop(env, "check")
    assert out.returncode == 0, out.stdout + out.stderr
    found = [line for line in pipedrive_lines(out) if "WRITEBACK" in line]
    assert found == [
        "closeloop check: ok: PIPEDRIVE_WRITEBACK_LEAD_RATING_FIELD: the custom field "
        "'Lead rating (Closeloop)' (varchar) exists (leads have the deals' custom fields); "
        "lead ratings are written back to it"
    ]
    assert [c.path for c in fake_pipedrive.calls] == ["/api/v1/users/me", "/api/v1/dealFields"]

    out = closeloop(
        {
            **env,
            "PIPEDRIVE_WRITEBACK_LEAD_RATING_FIELD": kind_wrong,
            "PIPEDRIVE_WRITEBACK_LEAD_REASON_FIELD": missing,
        },
        "check",
    )
    assert out.returncode == 1
    wrong, absent = (p.removeprefix("closeloop check: problem: ") for p in problems(out))
    assert wrong.startswith(
        f"PIPEDRIVE_WRITEBACK_LEAD_RATING_FIELD={kind_wrong}: Pipedrive's field 'Lead stage' "
        "is of type enum, not text"
    ), wrong
    assert absent.startswith(
        f"PIPEDRIVE_WRITEBACK_LEAD_REASON_FIELD={missing}: Pipedrive has no custom deal field "
        "with that key"
    ), absent
