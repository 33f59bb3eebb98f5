"""Leads from HubSpot: a contact handed to sales, through the same signed POST /hooks/hubspot.

A contact is handed over when its lifecycle stage is *marketing qualified lead*
(``marketingqualifiedlead``) and it has an owner (``hubspot_owner_id``). Three Webhooks API
events can mean that: ``contact.propertyChange`` on ``lifecyclestage`` to that stage,
``contact.propertyChange`` on ``hubspot_owner_id`` (an MQL given its owner later) and
``contact.creation`` (a contact created already qualified). Each is stored as its own
delivery (``contact:<contact id>:<eventId>``); events that cannot mean a hand-off (another
stage, an owner removed) are answered and dropped.

Processing reads the contact as it is *now* (CRM API v3), as for deals, so events arriving
out of order end in the same answer; the lead is taken once, as ``hubspot:contact:<id>``,
whichever event brings it first.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from bot.intake.errors import TryLater, Unprocessable
from bot.intake.hubspot_api import HubSpotError, configured_api, log_api_error
from bot.jobs.leads import nudge_new_lead, receive_lead
from bot.runtime import Runtime
from bot.services.leads import HANDED_AT_PAST, LeadIn

MQL = "marketingqualifiedlead"
CONTACT_EVENTS = ("contact.creation", "contact.propertyChange")
CONTACT_PROPERTIES = ("lifecyclestage", "hubspot_owner_id")
# HubSpot's traffic source values (hs_analytics_source, hs_latest_source) as people read them.
SOURCES = {
    "ORGANIC_SEARCH": "Organic search",
    "PAID_SEARCH": "Paid search",
    "EMAIL_MARKETING": "Email marketing",
    "SOCIAL_MEDIA": "Organic social",
    "PAID_SOCIAL": "Paid social",
    "REFERRALS": "Referrals",
    "OTHER_CAMPAIGNS": "Other campaigns",
    "DIRECT_TRAFFIC": "Direct traffic",
    "OFFLINE": "Offline sources",
    "AI_REFERRALS": "AI referrals",
}


def is_contact_event(event: Mapping[str, object]) -> bool:
    return str(event.get("subscriptionType") or "") in CONTACT_EVENTS


def wanted(event: Mapping[str, object]) -> bool:
    """Whether a contact event can mean a hand-off (stored), or not (dropped)."""
    kind = event.get("subscriptionType")
    if kind == "contact.creation":
        return True
    if kind != "contact.propertyChange" or event.get("propertyName") not in CONTACT_PROPERTIES:
        return False
    value = str(event.get("propertyValue") or "").strip()
    if event.get("propertyName") == "lifecyclestage":
        return value == MQL
    return bool(value)  # an owner given (not removed)


def delivery_id(event: Mapping[str, object]) -> str:
    """``contact:<contact id>:<eventId>``: HubSpot retries an event under its eventId."""
    if event.get("objectId") in (None, ""):
        raise Unprocessable(f"event {event.get('eventId')}: objectId is required")
    return f"contact:{str(event['objectId'])[:40]}:{str(event['eventId'])[:100]}"


def process(rt: Runtime, event: Mapping[str, object]) -> str:
    """Take the contact as a lead when it is an MQL with an owner now (or nothing); what came
    of it. TryLater when HubSpot cannot be read now."""
    contact_id = str(event.get("objectId") or "")
    if not contact_id:
        raise Unprocessable("no contact id")
    api = configured_api(rt.settings)
    try:
        props = api.contact(contact_id)
    except HubSpotError as err:
        if err.not_found:
            return f"contact {contact_id} is not in HubSpot (deleted or merged?)"
        log_api_error(err, scope="crm.objects.contacts.read")
        raise TryLater(str(err)) from None
    stage = props.get("lifecyclestage")
    if stage != MQL:
        return f"contact {contact_id}: lifecycle stage {stage!r} is not {MQL}"
    owner_id = props.get("hubspot_owner_id")
    if not owner_id:
        return f"contact {contact_id}: marketing qualified, no owner yet"
    try:
        owner_email = api.owner_email(owner_id)
    except HubSpotError as err:
        log_api_error(err, scope="crm.objects.contacts.read")
        raise TryLater(str(err)) from None
    now = rt.now()
    lead = lead_in(contact_id, props, owner_email=owner_email, at=_occurred(event, now), now=now)
    lead_pk, created = receive_lead(rt, lead, origin="crm")
    if not created:
        return f"contact {contact_id}: lead {lead_pk} already received"
    nudge_new_lead(rt, lead_pk)
    return f"contact {contact_id} handed to owner {owner_id}: lead {lead_pk} received"


def lead_in(
    contact_id: str,
    props: Mapping[str, str | None],
    *,
    owner_email: str | None,
    at: datetime | None,
    now: datetime,
) -> LeadIn:
    """The lead a contact is. The source is the *original* traffic source (how the person
    first came), else the latest: a source's leads are judged by where they came from."""
    name = " ".join(p for p in (props.get("firstname"), props.get("lastname")) if p).strip()
    email = (props.get("email") or "").strip().lower() or None
    raw_source = props.get("hs_analytics_source") or props.get("hs_latest_source")
    source = (
        SOURCES.get(raw_source, raw_source.replace("_", " ").capitalize()) if raw_source else None
    )
    return LeadIn(
        external_id=f"hubspot:contact:{contact_id}",
        person=(name or email or f"HubSpot contact {contact_id}")[:255],
        owner_email=owner_email,
        email=email[:255] if email else None,
        company=_short(props.get("company")),
        title=_short(props.get("jobtitle")),
        source=_short(source),
        campaign=_short(props.get("hs_analytics_source_data_1")),
        handed_at=at,
    )


def _short(value: str | None) -> str | None:
    return value.strip()[:255] or None if value else None


def _occurred(event: Mapping[str, object], now: datetime) -> datetime | None:
    """When HubSpot says the event happened (``occurredAt``, epoch ms): the hand-off, for
    the SLA. None (now) when absent, ahead of now or older than a hand-off can be."""
    value = event.get("occurredAt")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        at = datetime.fromtimestamp(float(value) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    if at > now or at < now - HANDED_AT_PAST + timedelta(minutes=1):
        return None
    return at
