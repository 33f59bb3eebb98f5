"""The CRM settings (HUBSPOT_*, SALESFORCE_*, PIPEDRIVE_*): each CRM is off until its settings
are all set, and a half-configured one is a problem named in one line (bot.config gathers
them)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from bot.config_values import USER_ID, ConfigError


def hubspot_settings(get) -> dict[str, str]:
    """HUBSPOT_*: the client secret and the access token together, or neither; URLs absolute."""
    secret, token = get("HUBSPOT_CLIENT_SECRET"), get("HUBSPOT_ACCESS_TOKEN")
    problems = []
    if secret and not token:
        problems.append(
            "HUBSPOT_ACCESS_TOKEN is required with HUBSPOT_CLIENT_SECRET "
            "(a private app's access token, to read the deals)"
        )
    if token and not secret:
        problems.append(
            "HUBSPOT_CLIENT_SECRET is required with HUBSPOT_ACCESS_TOKEN "
            "(the app's client secret, to verify HubSpot's signatures)"
        )
    found: dict[str, str] = {}
    for name, key in (
        ("HUBSPOT_API_URL", "hubspot_api_url"),
        ("HUBSPOT_WEBHOOK_URL", "hubspot_webhook_url"),
    ):
        value = get(name)
        if value is None:
            continue
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(f"{name} must be an absolute http(s) URL, not {value[:80]!r}")
        found[key] = value.rstrip("/") if key == "hubspot_api_url" else value
    problems += _writeback(
        get,
        found,
        names=(
            ("HUBSPOT_WRITEBACK_REASON_PROPERTY", "hubspot_writeback_reason_property"),
            ("HUBSPOT_WRITEBACK_CATEGORY_PROPERTY", "hubspot_writeback_category_property"),
        ),
        valid=_HUBSPOT_PROPERTY,
        what="a deal property's internal name (lowercase letters, digits, _)",
        needs="HUBSPOT_ACCESS_TOKEN and HUBSPOT_CLIENT_SECRET",
        on=bool(secret and token),
    )
    problems += _writeback(
        get,
        found,
        names=(
            ("HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY", "hubspot_writeback_lead_status_property"),
            ("HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY", "hubspot_writeback_lead_reason_property"),
        ),
        valid=_HUBSPOT_PROPERTY,
        what="a contact property's internal name (lowercase letters, digits, _)",
        needs="HUBSPOT_ACCESS_TOKEN and HUBSPOT_CLIENT_SECRET",
        on=bool(secret and token),
    )
    problems += _lead_statuses(get, found)
    if problems:
        raise ConfigError(*problems)
    if secret and token:
        found.update(hubspot_client_secret=secret, hubspot_access_token=token)
    return found


_HUBSPOT_PROPERTY = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
# A custom field's key (40 hexadecimal characters) or a standard field's ("lost_reason").
_PIPEDRIVE_FIELD = re.compile(r"^(?:[0-9a-f]{40}|[a-z][a-z0-9_]{0,63})$")
# A lead has the deals' custom fields (and no standard field a rating could go in).
_PIPEDRIVE_CUSTOM_FIELD = re.compile(r"^[0-9a-f]{40}$")

# A rating (bot.models.LeadStatus) -> the value of HubSpot's lead status it sets: the
# internal values of the default contact property hs_lead_status. Accepted is IN_PROGRESS
# (sales-qualified, being worked), not OPEN_DEAL: no deal need exist yet.
DEFAULT_HUBSPOT_LEAD_STATUSES: tuple[tuple[str, str], ...] = (
    ("accepted", "IN_PROGRESS"),
    ("not_ready", "BAD_TIMING"),
    ("rejected", "UNQUALIFIED"),
)


def _lead_statuses(get, found: dict) -> list[str]:
    """HUBSPOT_WRITEBACK_LEAD_STATUSES ("accepted=OPEN_DEAL,not_ready=..."): the values
    named replace the defaults' (DEFAULT_HUBSPOT_LEAD_STATUSES)."""
    text = get("HUBSPOT_WRITEBACK_LEAD_STATUSES")
    if text is None:
        return []
    name = "HUBSPOT_WRITEBACK_LEAD_STATUSES"
    mapping = dict(DEFAULT_HUBSPOT_LEAD_STATUSES)
    problems = []
    for pair in text.split(","):
        rating, sep, value = (part.strip() for part in pair.partition("="))
        if not pair.strip():
            continue
        if not sep or rating not in mapping or not value or len(value) > 100:
            problems.append(
                f"{name} has {pair.strip()[:80]!r}: use rating=VALUE pairs, comma-separated, "
                "ratings accepted, not_ready, rejected (VALUE: an option's internal value)"
            )
            continue
        mapping[rating] = value
    if not found.get("hubspot_writeback_lead_status_property"):
        problems.append(
            f"{name} needs HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY (e.g. hs_lead_status)"
        )
    found["hubspot_writeback_lead_statuses"] = tuple(mapping.items())
    return problems


def _writeback(
    get,
    found: dict,
    *,
    names: tuple[tuple[str, str], tuple[str, str]],
    valid: re.Pattern,
    what: str,
    needs: str,
    on: bool,
) -> list[str]:
    """A CRM's two write-back settings (each optional: an entry's words and category, or a
    lead's rating and reason) into ``found``; the problems with them."""
    problems = []
    given = {}
    for name, key in names:
        value = get(name)
        if value is None:
            continue
        if not valid.match(value):
            problems.append(f"{name}={value[:80]!r} is not {what}")
        given[name] = value
        found[key] = value
    if given and not on:
        problems.append(f"{' and '.join(given)} need {needs} (write-back uses the CRM's API token)")
    if len(given) == 2 and len(set(given.values())) == 1:
        problems.append(f"{' and '.join(given)} must name two different fields")
    return problems


_SALESFORCE_ORG = re.compile(r"^00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")
_SALESFORCE_USER = re.compile(r"^005[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")
_SALESFORCE_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")


def salesforce_settings(get) -> dict[str, object]:
    """SALESFORCE_*: the org's id and the secret together, or neither; field names and the
    owner mapping well-formed."""
    org, secret = get("SALESFORCE_ORG_ID"), get("SALESFORCE_WEBHOOK_SECRET")
    problems = []
    if org and not secret:
        problems.append(
            "SALESFORCE_WEBHOOK_SECRET is required with SALESFORCE_ORG_ID "
            "(the secret Salesforce sends in the endpoint URL: openssl rand -hex 24)"
        )
    if secret and not org:
        problems.append(
            "SALESFORCE_ORG_ID is required with SALESFORCE_WEBHOOK_SECRET "
            "(Setup > Company Information > Salesforce.com Organization ID, 00D...)"
        )
    if org and not _SALESFORCE_ORG.match(org):
        problems.append(
            f"SALESFORCE_ORG_ID={org[:40]!r} is not an organization ID (00D..., 15 or 18 "
            "letters and digits)"
        )
    if secret and not re.fullmatch(r"[A-Za-z0-9._~-]{16,200}", secret):
        problems.append(
            "SALESFORCE_WEBHOOK_SECRET must be 16 to 200 letters, digits or . _ ~ - "
            "(it goes in a URL): openssl rand -hex 24"
        )
    found: dict[str, object] = {}
    for name, key in (
        ("SALESFORCE_OWNER_FIELD", "salesforce_owner_field"),
        ("SALESFORCE_LOSS_REASON_FIELD", "salesforce_loss_reason_field"),
        ("SALESFORCE_WIN_REASON_FIELD", "salesforce_win_reason_field"),
    ):
        value = get(name)
        if value is None:
            continue
        if not _SALESFORCE_FIELD.match(value):
            problems.append(f"{name}={value[:80]!r} is not a field's API name like Owner_Email__c")
        found[key] = value
    owners: dict[str, str] = {}
    for pair in (get("SALESFORCE_OWNERS") or "").split(","):
        if not pair.strip():
            continue
        user, _, who = (part.strip() for part in pair.partition("="))
        if not _SALESFORCE_USER.match(user) or not (
            USER_ID.match(who) or re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", who)
        ):
            problems.append(
                f"SALESFORCE_OWNERS has {pair.strip()[:80]!r}: use OwnerId=email or "
                "OwnerId=U... pairs (005... ids), comma-separated"
            )
            continue
        owners[user[:15]] = who.lower() if "@" in who else who
    if problems:
        raise ConfigError(*problems)
    if owners:
        found["salesforce_owners"] = tuple(owners.items())
    if org and secret:
        found.update(salesforce_org_id=org, salesforce_webhook_secret=secret)
    return found


_PIPEDRIVE_NAMES = {
    "PIPEDRIVE_WEBHOOK_USER": "the webhook's HTTP basic auth user, as entered in Pipedrive",
    "PIPEDRIVE_WEBHOOK_PASSWORD": "the webhook's HTTP basic auth password",
    "PIPEDRIVE_API_TOKEN": "an API token, to read each deal owner's email",
}


def pipedrive_settings(get) -> dict[str, str]:
    """PIPEDRIVE_*: the webhook's user and password and the API token together, or none;
    PIPEDRIVE_API_URL absolute."""
    given = {name: get(name) for name in _PIPEDRIVE_NAMES}
    problems = []
    missing = [name for name, value in given.items() if not value]
    if missing and len(missing) < len(given):
        present = " and ".join(n for n, v in given.items() if v)
        needed = "; ".join(f"{n}: {_PIPEDRIVE_NAMES[n]}" for n in missing)
        verb = "is" if len(missing) == 1 else "are"
        problems.append(f"{' and '.join(missing)} {verb} required with {present} ({needed})")
    if given["PIPEDRIVE_WEBHOOK_USER"] and ":" in given["PIPEDRIVE_WEBHOOK_USER"]:
        problems.append("PIPEDRIVE_WEBHOOK_USER cannot contain ':' (HTTP basic auth splits on it)")
    found: dict[str, str] = {}
    url = get("PIPEDRIVE_API_URL")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(f"PIPEDRIVE_API_URL must be an absolute http(s) URL, not {url[:80]!r}")
        found["pipedrive_api_url"] = url.rstrip("/")
    problems += _writeback(
        get,
        found,
        names=(
            ("PIPEDRIVE_WRITEBACK_REASON_FIELD", "pipedrive_writeback_reason_field"),
            ("PIPEDRIVE_WRITEBACK_CATEGORY_FIELD", "pipedrive_writeback_category_field"),
        ),
        valid=_PIPEDRIVE_FIELD,
        what="a deal field's key (a custom field's is 40 characters, 0-9 and a-f)",
        needs="PIPEDRIVE_API_TOKEN (with the webhook's user and password)",
        on=all(given.values()),
    )
    problems += _writeback(
        get,
        found,
        names=(
            ("PIPEDRIVE_WRITEBACK_LEAD_RATING_FIELD", "pipedrive_writeback_lead_rating_field"),
            ("PIPEDRIVE_WRITEBACK_LEAD_REASON_FIELD", "pipedrive_writeback_lead_reason_field"),
        ),
        valid=_PIPEDRIVE_CUSTOM_FIELD,
        what="a custom deal field's key (40 characters, 0-9 and a-f: leads have the deals' "
        "custom fields)",
        needs="PIPEDRIVE_API_TOKEN (with the webhook's user and password)",
        on=all(given.values()),
    )
    if problems:
        raise ConfigError(*problems)
    if all(given.values()):
        found.update(
            pipedrive_webhook_user=str(given["PIPEDRIVE_WEBHOOK_USER"]),
            pipedrive_webhook_password=str(given["PIPEDRIVE_WEBHOOK_PASSWORD"]),
            pipedrive_api_token=str(given["PIPEDRIVE_API_TOKEN"]),
        )
    return found
