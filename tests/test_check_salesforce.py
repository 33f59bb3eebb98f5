"""`closeloop check` on Salesforce's settings: off, on, and the Slack IDs its owner mapping
names checked like every other listed person."""

from __future__ import annotations

from tests.conftest import closeloop
from tests.test_check import lines, problems

ORG = "00D5e000000ABCD"
SECRET = "sf-hook-secret-0123456789"


def salesforce_lines(out) -> list[str]:
    return [line for line in lines(out) if "Salesforce" in line or "SALESFORCE" in line]


def test_salesforce_off_is_said_once(cli_env, fake_slack):
    out = closeloop({**cli_env, "DEALS_WEBHOOK_SECRET": "s3cret"}, "check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert salesforce_lines(out) == [
        "closeloop check: ok: Salesforce is off "
        "(SALESFORCE_ORG_ID and SALESFORCE_WEBHOOK_SECRET unset)"
    ]


def test_salesforce_on_and_its_owner_mapping_checked_in_slack(cli_env, fake_slack):
    fake_slack.add_user("UBOT", is_bot=True)
    env = {
        **cli_env,
        "DEALS_WEBHOOK_SECRET": "s3cret",
        "SALESFORCE_ORG_ID": ORG,
        "SALESFORCE_WEBHOOK_SECRET": SECRET,
        "SALESFORCE_OWNERS": "005000000000001=UANA,005000000000002=U0NOPE,"
        "005000000000003=UBOT,005000000000004=ben@example.com",
    }
    out = closeloop(env, "check")
    assert out.returncode == 1
    assert sorted(problems(out)) == [
        "closeloop check: problem: SALESFORCE_OWNERS: U0NOPE: no such user (user_not_found): "
        "copy the member ID (U...) from their profile",
        "closeloop check: problem: SALESFORCE_OWNERS: UBOT is a bot, not a person: "
        "remove it from SALESFORCE_OWNERS",
    ]
    on = [line for line in salesforce_lines(out) if "Salesforce is on" in line]
    assert on == [
        f"closeloop check: ok: Salesforce is on for organization {ORG}: a deal's owner is read "
        "from its Owner_Email__c field, or from SALESFORCE_OWNERS (4 mapped)"
    ]
    assert SECRET not in out.stdout + out.stderr
