"""Leads from Pipedrive: webhooks v2 deliveries about a ``lead`` (an object only v2 sends) on
the same POST /hooks/pipedrive.

A lead is handed over when it is created for another user than its creator (``owner_id`` is
not ``creator_id``: marketing created it for a salesperson) or given a new owner
(``previous`` holds ``owner_id``), and is not archived. Such an event is stored as
``lead:<lead id>:<meta.id>``; processing reads the owner's email, the person and the
organization from the API and takes the lead once, as ``pipedrive:lead:<id>``. A hand-off
older than another stored for the same lead is superseded: the later owner is asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from bot.db import session_scope
from bot.intake.errors import TryLater, Unprocessable
from bot.intake.pipedrive_api import PipedriveApi, PipedriveError, log_api_error
from bot.intake.pipedrive_events import instant, superseded, text
from bot.jobs.leads import nudge_new_lead, receive_lead
from bot.runtime import Runtime
from bot.services.leads import HANDED_AT_PAST, LeadIn


def delivery_id(data: Mapping[str, object], event_id: str) -> str | None:
    """``lead:<lead id>:<meta.id>`` for a lead handed to someone: created for another user
    than its creator (``owner_id`` is not ``creator_id``), or given a new owner (``previous``
    holds ``owner_id``); not archived. None for any other lead event."""
    lead = data.get("data")
    if not isinstance(lead, dict) or lead.get("is_archived") is True:
        return None
    owner = text(lead.get("owner_id"))
    if owner is None:
        return None
    meta = data["meta"]
    assert isinstance(meta, dict)
    if meta.get("action") == "create":
        if owner == text(lead.get("creator_id")):
            return None  # a salesperson's own lead: nobody handed it over
    else:
        previous = data.get("previous")
        if not isinstance(previous, dict) or "owner_id" not in previous:
            return None
        if text(previous.get("owner_id")) == owner:
            return None
    lead_id = text(lead.get("id")) or text(meta.get("entity_id"))
    if lead_id is None:
        raise Unprocessable("the lead's id (data.id or meta.entity_id) is required")
    return f"lead:{lead_id}:{event_id}"


def process(rt: Runtime, data: Mapping[str, object], key: str) -> str:
    """A lead handed to its owner: taken once, as ``pipedrive:lead:<id>``, with its person
    and organization read from Pipedrive (and the owner's email); a hand-off older than
    another stored for the same lead does nothing (the later owner is the one asked).

    Raises TryLater when Pipedrive cannot be read now."""
    s = rt.settings
    if not s.pipedrive_configured:
        raise TryLater("Pipedrive is not configured any more")
    assert s.pipedrive_api_token is not None
    lead = data["data"]
    assert isinstance(lead, dict)
    lead_id = key.split(":")[1]
    with session_scope(rt.session_factory) as session:
        later = superseded(session, prefix=f"lead:{lead_id}:", delivery_id=key)
    if later:
        return f"lead {lead_id}: superseded by a later hand-off ({later})"
    api = PipedriveApi(api_url=s.pipedrive_api_url, token=s.pipedrive_api_token)
    owner_id = text(lead.get("owner_id")) or ""
    person_id, org_id = text(lead.get("person_id")), text(lead.get("organization_id"))
    try:
        owner_email = api.user_email(owner_id)
        person = api.person(person_id) if person_id else None
        org = api.organization(org_id) if org_id else None
    except PipedriveError as err:
        log_api_error(err)
        raise TryLater(str(err)) from None
    meta = data["meta"]
    assert isinstance(meta, dict)
    handed = instant(meta.get("timestamp"))
    now = rt.now()
    at = datetime.fromtimestamp(handed, UTC) if handed else None
    if at is not None and not now - HANDED_AT_PAST < at <= now:
        at = None
    received = receive_lead(rt, _lead_in(lead_id, lead, person, org, owner_email, at), origin="crm")
    lead_pk, created = received
    if not created:
        return f"lead {lead_id}: lead {lead_pk} already received"
    nudge_new_lead(rt, lead_pk)
    return f"lead {lead_id} handed to owner {owner_id}: lead {lead_pk} received"


def _lead_in(
    lead_id: str,
    lead: Mapping[str, object],
    person: Mapping[str, object] | None,
    org: Mapping[str, object] | None,
    owner_email: str | None,
    at: datetime | None,
) -> LeadIn:
    """The lead: the person's name (else the lead's title), email, job title; the
    organization's name; the lead's ``source_name`` as its source, its title as context."""
    person = person or {}
    title = _plain(lead.get("title"))
    company = _plain((org or {}).get("name")) or _plain(person.get("org_name"))
    email = _primary_email(person.get("email"))
    return LeadIn(
        external_id=f"pipedrive:lead:{lead_id}",
        person=(_plain(person.get("name")) or title or f"Pipedrive lead {lead_id}")[:255],
        owner_email=owner_email,
        email=email,
        company=company,
        title=_plain(person.get("job_title")),
        source=_plain(lead.get("source_name")),
        context=title,
        handed_at=at,
    )


def _plain(value: object) -> str | None:
    return value.strip()[:255] or None if isinstance(value, str) else None


def _primary_email(value: object) -> str | None:
    """A person's email: v1 sends a list of ``{"value", "primary"}`` (the primary first)."""
    if isinstance(value, str):
        return _plain(value.lower())
    if not isinstance(value, list):
        return None
    items = [e for e in value if isinstance(e, dict) and _plain(e.get("value"))]
    items.sort(key=lambda e: not e.get("primary"))
    return _plain(str(items[0]["value"]).lower()) if items else None
