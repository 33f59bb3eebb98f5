"""`closeloop check` reports HubSpot's state: off, or its token tried against (the fake)
HubSpot with two cheap reads; run as an operator runs it."""

from __future__ import annotations

import pytest

from tests.conftest import closeloop
from tests.fakehubspot import FakeHubSpot
from tests.test_check import lines, problems

TOKEN = "pat-na1-check-token"


@pytest.fixture
def fake_hubspot():
    fake = FakeHubSpot(token=TOKEN)
    fake.start()
    fake.add_owner("42", "ana@example.com")
    try:
        yield fake
    finally:
        fake.stop()


def hubspot_env(cli_env, fake_hubspot, **changes):
    env = {
        **cli_env,
        "DEALS_WEBHOOK_SECRET": "s3cret",
        "HUBSPOT_CLIENT_SECRET": "hs-secret",
        "HUBSPOT_ACCESS_TOKEN": TOKEN,
        "HUBSPOT_API_URL": fake_hubspot.url,
    }
    env.update(changes)
    return env


def hubspot_lines(out) -> list[str]:
    return [line for line in lines(out) if "HubSpot" in line or "HUBSPOT" in line]


def test_hubspot_off_is_said_once(cli_env, fake_slack):
    out = closeloop({**cli_env, "DEALS_WEBHOOK_SECRET": "s3cret"}, "check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert hubspot_lines(out) == [
        "closeloop check: ok: HubSpot is off (HUBSPOT_CLIENT_SECRET and HUBSPOT_ACCESS_TOKEN unset)"
    ]


def test_a_valid_token_and_complete_settings(cli_env, fake_slack, fake_hubspot):
    env = hubspot_env(
        cli_env, fake_hubspot, HUBSPOT_WEBHOOK_URL="https://bot.example.com/hooks/hubspot"
    )
    out = closeloop(env, "check")
    assert out.returncode == 0, out.stdout + out.stderr
    found = hubspot_lines(out)
    assert (
        "ok: HUBSPOT_ACCESS_TOKEN is valid: 2 deal pipeline(s), 4 closed won or lost" in (found[0])
    )
    assert "verified as sent to https://bot.example.com/hooks/hubspot" in found[1]
    assert {c.authorization for c in fake_hubspot.calls} == {f"Bearer {TOKEN}"}
    assert [c.path for c in fake_hubspot.calls] == [
        "/crm/v3/pipelines/deals",
        "/crm/v3/owners",
        "/crm/v3/objects/contacts",
    ]
    assert not any("contacts" in line for line in found)  # said only when refused


def test_a_refused_token_or_a_missing_scope_is_a_problem(cli_env, fake_slack, fake_hubspot):
    out = closeloop(hubspot_env(cli_env, fake_hubspot, HUBSPOT_ACCESS_TOKEN="pat-wrong"), "check")
    assert out.returncode == 1
    (problem,) = problems(out)
    assert "HubSpot refused HUBSPOT_ACCESS_TOKEN (HubSpot 401" in problem
    assert "pat-wrong" not in out.stdout + out.stderr

    fake_hubspot.scopes.discard("crm.objects.owners.read")
    out = closeloop(hubspot_env(cli_env, fake_hubspot), "check")
    assert out.returncode == 1
    (problem,) = problems(out)
    assert "lacks a scope" in problem and "crm.objects.owners.read" in problem


def test_a_token_that_cannot_read_contacts_is_a_warning(cli_env, fake_slack, fake_hubspot):
    """Deals work without the contacts scope; leads from HubSpot wait for it."""
    fake_hubspot.scopes.discard("crm.objects.contacts.read")
    out = closeloop(hubspot_env(cli_env, fake_hubspot), "check")
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = [line for line in hubspot_lines(out) if "contacts" in line]
    assert line.startswith("closeloop check: warning: HUBSPOT_ACCESS_TOKEN cannot read contacts")
    assert "crm.objects.contacts.read" in line


def test_hubspot_down_is_a_warning(cli_env, fake_slack, fake_hubspot):
    fake_hubspot.down = True
    out = closeloop(hubspot_env(cli_env, fake_hubspot), "check")
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = hubspot_lines(out)
    assert line.startswith("closeloop check: warning: HubSpot's API could not be read")


def test_half_the_settings_is_refused_naming_the_missing_one(cli_env, fake_slack):
    out = closeloop({**cli_env, "HUBSPOT_CLIENT_SECRET": "hs-secret"}, "check")
    assert out.returncode != 0
    assert "HUBSPOT_ACCESS_TOKEN is required with HUBSPOT_CLIENT_SECRET" in out.stderr


def test_writeback_properties_are_read_one_line_each(cli_env, fake_slack, fake_hubspot):
    fake_hubspot.add_property("closeloop_customer_words")
    env = hubspot_env(
        cli_env,
        fake_hubspot,
        HUBSPOT_WRITEBACK_REASON_PROPERTY="closeloop_customer_words",
        HUBSPOT_WRITEBACK_CATEGORY_PROPERTY="closeloop_missing",
    )
    out = closeloop(env, "check")
    assert out.returncode == 1, out.stdout + out.stderr
    found = [line for line in hubspot_lines(out) if "WRITEBACK" in line]
    assert len(found) == 2, found
    assert found[0].startswith(
        "closeloop check: ok: HUBSPOT_WRITEBACK_REASON_PROPERTY=closeloop_customer_words: "
        "the deal property"
    )
    assert found[1].startswith(
        "closeloop check: problem: HUBSPOT_WRITEBACK_CATEGORY_PROPERTY=closeloop_missing: "
        "HubSpot has no deal property by that internal name"
    )
    assert [c.path for c in fake_hubspot.calls][-2:] == [
        "/crm/v3/properties/deals/closeloop_customer_words",
        "/crm/v3/properties/deals/closeloop_missing",
    ]
    assert [c for c in fake_hubspot.calls if c.method != "GET"] == []  # nothing written

    fake_hubspot.scopes.discard("crm.schemas.deals.read")
    out = closeloop(
        hubspot_env(
            cli_env,
            fake_hubspot,
            **{"HUBSPOT_WRITEBACK_REASON_PROPERTY": "closeloop_customer_words"},
        ),
        "check",
    )
    (problem,) = problems(out)
    assert "may not read deal properties" in problem and "crm.schemas.deals.read" in problem


def test_without_writeback_no_property_is_read(cli_env, fake_slack, fake_hubspot):
    out = closeloop(hubspot_env(cli_env, fake_hubspot), "check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert not [c for c in fake_hubspot.calls if "/properties/" in c.path]


def test_lead_writeback_reads_the_contact_properties_and_their_options(
    cli_env, fake_slack, fake_hubspot
):
    fake_hubspot.add_contact_property("closeloop_reject_reason")
    env = hubspot_env(
        cli_env,
        fake_hubspot,
        HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY="hs_lead_status",
        HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY="closeloop_reject_reason",
    )
    out = closeloop(env, "check")
    assert out.returncode == 0, out.stdout + out.stderr
    found = [line for line in hubspot_lines(out) if "WRITEBACK_LEAD" in line]
    assert found == [
        "closeloop check: ok: HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY=hs_lead_status: the "
        "contact property 'Lead Status' (radio) exists; lead ratings are written back to it "
        "as accepted=IN_PROGRESS, not_ready=BAD_TIMING, rejected=UNQUALIFIED (the token needs "
        "crm.objects.contacts.write)",
        "closeloop check: ok: HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY=closeloop_reject_reason: "
        "the contact property 'closeloop_reject_reason' (text) exists; lead ratings are "
        "written back to it (the token needs crm.objects.contacts.write)",
    ]
    assert [c.path for c in fake_hubspot.calls][-2:] == [
        "/crm/v3/properties/contacts/hs_lead_status",
        "/crm/v3/properties/contacts/closeloop_reject_reason",
    ]
    assert [c for c in fake_hubspot.calls if c.method != "GET"] == []  # nothing written

    # A value the dropdown lacks, a property missing, a scope missing: problems.
    out = closeloop(
        {
            **env,
            "HUBSPOT_WRITEBACK_LEAD_STATUSES": "accepted=SALES_QUALIFIED",
            "HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY": "closeloop_missing",
        },
        "check",
    )
    assert out.returncode == 1
    status, reason = (p.removeprefix("closeloop check: problem: ") for p in problems(out))
    assert status.startswith(
        "HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY=hs_lead_status: the contact property "
        "'Lead Status' has no option SALES_QUALIFIED (its options: NEW, OPEN, IN_PROGRESS"
    ), status
    assert reason.startswith(
        "HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY=closeloop_missing: HubSpot has no contact "
        "property by that internal name"
    ), reason
    fake_hubspot.scopes.discard("crm.schemas.contacts.read")
    out = closeloop(env, "check")
    assert len(problems(out)) == 2
    assert all("crm.schemas.contacts.read" in p for p in problems(out))
