"""``closeloop check``'s CRM findings: HubSpot's and Pipedrive's tokens tried with cheap reads
(and the properties and fields write-back writes), Salesforce's settings (it calls us and is
never called). Only reads are made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.config import Settings
from bot.finding import OK, PROBLEM, WARNING, Finding
from bot.intake.hubspot_api import HubSpotApi, HubSpotError
from bot.intake.pipedrive_api import PipedriveApi, PipedriveError


def hubspot(settings: Settings):
    """HubSpot's settings, and its token tried with cheap reads (the deal pipelines and one
    owner: what /hooks/hubspot needs to turn a delivery into a deal; one contact: what it
    needs for a lead, a warning only when refused)."""
    if not settings.hubspot_configured:
        yield Finding(OK, "HubSpot is off (HUBSPOT_CLIENT_SECRET and HUBSPOT_ACCESS_TOKEN unset)")
        return
    assert settings.hubspot_access_token is not None
    api = HubSpotApi(api_url=settings.hubspot_api_url, token=settings.hubspot_access_token)
    try:
        pipelines = api.pipelines()
        api.can_read_owners()
    except HubSpotError as err:
        if err.status == 401:
            yield Finding(
                PROBLEM,
                f"HubSpot refused HUBSPOT_ACCESS_TOKEN ({err}): copy the access token of the "
                "private app again (HubSpot: Settings > Integrations > Private apps)",
            )
        elif err.status == 403:
            yield Finding(
                PROBLEM,
                f"HUBSPOT_ACCESS_TOKEN lacks a scope ({err}): give the private app "
                "crm.objects.deals.read and crm.objects.owners.read",
            )
        else:
            yield Finding(
                WARNING,
                f"HubSpot's API could not be read ({err}): its deliveries are stored and "
                "processed once it can",
            )
        return
    closing = sum(1 for stages in pipelines.values() for s in stages.values() if s.outcome)
    if closing:
        yield Finding(
            OK,
            f"HUBSPOT_ACCESS_TOKEN is valid: {len(pipelines)} deal pipeline(s), {closing} "
            "closed won or lost stage(s)",
        )
    else:
        yield Finding(
            WARNING,
            "HubSpot has no closed won or lost deal stage (closed, probability 1.0 or 0.0): "
            "no deal from HubSpot will be asked about",
        )
    try:
        api.can_read_contacts()
    except HubSpotError as err:
        if err.status in (401, 403):
            yield Finding(
                WARNING,
                f"HUBSPOT_ACCESS_TOKEN cannot read contacts ({err}): leads handed over in "
                "HubSpot (contacts becoming marketing qualified) wait, stored, until the "
                "private app has crm.objects.contacts.read; deals are not affected",
            )
    where = settings.hubspot_webhook_url or "https://<this host>/hooks/hubspot"
    yield Finding(OK, f"HubSpot's webhooks are verified as sent to {where}")
    yield from _hubspot_writeback(settings, api)


def _hubspot_writeback(settings: Settings, api: HubSpotApi):
    """Each write-back property read (``GET /crm/v3/properties/deals/{name}``, and
    ``/contacts/{name}`` for lead write-back): one line each. The writes themselves (scopes
    crm.objects.deals.write, crm.objects.contacts.write) are not tried: they would change
    a deal or a contact."""
    yield from _hubspot_properties(
        (
            ("HUBSPOT_WRITEBACK_REASON_PROPERTY", settings.hubspot_writeback_reason_property),
            ("HUBSPOT_WRITEBACK_CATEGORY_PROPERTY", settings.hubspot_writeback_category_property),
        ),
        api.deal_property,
        noun="deal",
        create="Settings > Properties > Deal properties, a single-line or multi-line text",
        what="entries",
        scopes="crm.schemas.deals.read and crm.objects.deals.write",
        values={},
    )
    status = settings.hubspot_writeback_lead_status_property
    statuses = dict(settings.hubspot_writeback_lead_statuses)
    yield from _hubspot_properties(
        (
            ("HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY", status),
            (
                "HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY",
                settings.hubspot_writeback_lead_reason_property,
            ),
        ),
        api.contact_property,
        noun="contact",
        create="Settings > Properties > Contact properties; the lead status is the default "
        "hs_lead_status",
        what="lead ratings",
        scopes="crm.schemas.contacts.read and crm.objects.contacts.write",
        values={
            "HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY": tuple(statuses.values()),
            "HUBSPOT_WRITEBACK_LEAD_REASON_PROPERTY": settings.leads.reject_reasons,
        },
        as_values={
            "HUBSPOT_WRITEBACK_LEAD_STATUS_PROPERTY": ", ".join(
                f"{k}={v}" for k, v in statuses.items()
            )
        },
    )


def _hubspot_properties(
    wanted,
    read,
    *,
    noun: str,
    create: str,
    what: str,
    scopes: str,
    values: Mapping[str, Sequence[str]],
    as_values: Mapping[str, str] | None = None,
):
    """Each named property read with ``read``: one line each. A dropdown (an enumeration
    with options) must have every value Closeloop writes in it (``values``, by setting):
    HubSpot refuses any other. ``as_values``: how a setting's values are said."""
    as_values = as_values or {}
    for setting, name in wanted:
        if not name:
            continue
        try:
            prop = read(name)
        except HubSpotError as err:
            if err.not_found:
                yield Finding(
                    PROBLEM,
                    f"{setting}={name}: HubSpot has no {noun} property by that internal name: "
                    f"create it ({create}) or correct the name; {what} cannot be written back",
                )
            elif err.status == 403:
                yield Finding(
                    PROBLEM,
                    f"{setting}={name}: HUBSPOT_ACCESS_TOKEN may not read {noun} properties "
                    f"({err}): give the private app {scopes}",
                )
            else:
                yield Finding(WARNING, f"{setting}={name} could not be checked ({err})")
            continue
        kind = prop.get("fieldType") or prop.get("type") or "?"
        label = prop.get("label") or name
        options = [o.get("value") for o in prop.get("options") or [] if isinstance(o, dict)]
        missing = [v for v in values.get(setting, ()) if options and v not in options]
        if missing:
            yield Finding(
                PROBLEM,
                f"{setting}={name}: the {noun} property {label!r} has no option "
                f"{', '.join(missing)} (its options: {', '.join(map(str, options))}): HubSpot "
                f"refuses those values; add them, or map the ratings to its options "
                "(HUBSPOT_WRITEBACK_LEAD_STATUSES)",
            )
            continue
        how = f" as {as_values[setting]}" if setting in as_values else ""
        yield Finding(
            OK,
            f"{setting}={name}: the {noun} property {label!r} ({kind}) exists; {what} are "
            f"written back to it{how} (the token needs {scopes.split(' and ')[-1]})",
        )


def pipedrive(settings: Settings):
    """Pipedrive's settings, and its API token tried with one cheap read (``GET /users/me``,
    the token's own user): what /hooks/pipedrive and the daily reconciliation need."""
    if not settings.pipedrive_configured:
        yield Finding(
            OK,
            "Pipedrive is off (PIPEDRIVE_WEBHOOK_USER, PIPEDRIVE_WEBHOOK_PASSWORD and "
            "PIPEDRIVE_API_TOKEN unset)",
        )
        return
    assert settings.pipedrive_api_token is not None
    api = PipedriveApi(api_url=settings.pipedrive_api_url, token=settings.pipedrive_api_token)
    try:
        me = api.me()
    except PipedriveError as err:
        if err.status in (401, 403):
            yield Finding(
                PROBLEM,
                f"Pipedrive refused PIPEDRIVE_API_TOKEN ({err}): copy the API token again "
                "(Pipedrive: profile > Personal preferences > API), and check "
                f"PIPEDRIVE_API_URL={settings.pipedrive_api_url}",
            )
        else:
            yield Finding(
                WARNING,
                f"Pipedrive's API could not be read ({err}): its deliveries are stored and "
                "processed once it can",
            )
        return
    who = me.get("email") or me.get("name") or f"user {me.get('id')}"
    yield Finding(
        OK,
        f"PIPEDRIVE_API_TOKEN is valid: Pipedrive user {who}; webhooks at /hooks/pipedrive "
        "are taken with PIPEDRIVE_WEBHOOK_USER's basic auth",
    )
    yield from _pipedrive_writeback(settings, api)


def _pipedrive_writeback(settings: Settings, api: PipedriveApi):
    """Each write-back field looked for among the deal fields (``GET /dealFields``: a
    lead's custom fields are the deals'): one line each."""
    wanted = (
        ("PIPEDRIVE_WRITEBACK_REASON_FIELD", settings.pipedrive_writeback_reason_field),
        ("PIPEDRIVE_WRITEBACK_CATEGORY_FIELD", settings.pipedrive_writeback_category_field),
    )
    lead_wanted = (
        ("PIPEDRIVE_WRITEBACK_LEAD_RATING_FIELD", settings.pipedrive_writeback_lead_rating_field),
        ("PIPEDRIVE_WRITEBACK_LEAD_REASON_FIELD", settings.pipedrive_writeback_lead_reason_field),
    )
    if not any(key for _, key in wanted + lead_wanted):
        return  # write-back is off
    try:
        fields = api.deal_fields()
    except PipedriveError as err:
        yield Finding(WARNING, f"Pipedrive's deal fields could not be read ({err})")
        return
    for setting, key in wanted:
        if not key:
            continue
        found = fields.get(key)
        if found is None:
            yield Finding(
                PROBLEM,
                f"{setting}={key}: Pipedrive has no deal field with that key: create one "
                "(Company settings > Data fields > Deal, type Large text) and copy its API "
                "key; entries cannot be written back",
            )
            continue
        yield Finding(
            OK,
            f"{setting}: the deal field {found.get('name') or key!r} "
            f"({found.get('field_type') or '?'}) exists; entries are written back to it",
        )
    for setting, key in lead_wanted:
        if not key:
            continue
        found = fields.get(key)
        kind = (found or {}).get("field_type") or "?"
        if found is None or kind not in PIPEDRIVE_TEXT_FIELDS:
            what = (
                " has no custom deal field with that key"
                if found is None
                else (f"'s field {found.get('name') or key!r} is of type {kind}, not text")
            )
            yield Finding(
                PROBLEM,
                f"{setting}={key}: Pipedrive{what}: create a custom deal field (Company "
                "settings > Data fields > Deal, type Text; leads have the deals' custom "
                "fields) and copy its API key; lead ratings cannot be written back",
            )
            continue
        yield Finding(
            OK,
            f"{setting}: the custom field {found.get('name') or key!r} ({kind}) exists (leads "
            "have the deals' custom fields); lead ratings are written back to it",
        )


# Pipedrive's field types a rating's or a reason's text can be written to: Text, Large text,
# Autocomplete (a single option would want an option's id).
PIPEDRIVE_TEXT_FIELDS = ("varchar", "text", "varchar_auto")


def salesforce(settings: Settings):
    """Salesforce calls us and is never called: its settings are all there is to check (the
    Slack IDs in SALESFORCE_OWNERS are checked with the other users)."""
    if not settings.salesforce_configured:
        yield Finding(
            OK, "Salesforce is off (SALESFORCE_ORG_ID and SALESFORCE_WEBHOOK_SECRET unset)"
        )
        return
    owners = len(settings.salesforce_owners)
    yield Finding(
        OK,
        f"Salesforce is on for organization {settings.salesforce_org_id}: a deal's owner is "
        f"read from its {settings.salesforce_owner_field} field"
        + (f", or from SALESFORCE_OWNERS ({owners} mapped)" if owners else ""),
    )
