"""Write-back: what Slack learnt set on the CRM's own records, so the CRM stays the single
source of truth (docs/crm-hubspot.md, docs/crm-pipedrive.md). Two kinds, one machinery:

- ``crm_writeback``: a logged win/loss entry's words and category on its deal (subject the
  entry; bot.services.outgoing.crm_writeback), enqueued with the entry and every edit;
- ``lead_writeback``: a lead's latest rating on its CRM record, a HubSpot contact's lead
  status or a Pipedrive lead's custom fields (subject the lead;
  bot.services.outgoing.lead_writeback), enqueued with every rating.

The outbox carries each as any message (op CALL, ``channel`` the CRM): rendered when it is
sent from the subject as it is then, and sent by the kind's own ``send`` hook instead of
Slack. A write sets the record's fields to the subject's current values, so making it twice
is harmless; it is neither paced nor looked for first.

How a CRM's answer is settled (:func:`failed`): a 429 is retried after its Retry-After, a
5xx or no answer with the outbox's backoff, a 401/403 too (the token is fixed by an admin,
as the bot is invited to a channel); any other 4xx (no such property or field, no such
record, a value refused) is given up, logged, and kept with the message (``last_error``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy.orm import Session

from bot.config import Settings
from bot.delivery.outbox import CallFailed, Delivered, Kind, Kinds, Render, rendered
from bot.intake.hubspot_api import TEXT_LIMIT, HubSpotApi, HubSpotError
from bot.intake.pipedrive_api import PipedriveApi, PipedriveError
from bot.models import Lead, LeadStatus, OutboxKind, WinLossEntry
from bot.services.outbox import Outgoing
from bot.services.outgoing import lead_record

log = logging.getLogger(__name__)

HUBSPOT, PIPEDRIVE = "hubspot", "pipedrive"
ELLIPSIS = "…"
# What a Pipedrive lead's rating field shows (a text field: readable in Pipedrive's UI).
PIPEDRIVE_RATINGS = {
    LeadStatus.ACCEPTED: "Accepted",
    LeadStatus.NOT_READY: "Not ready",
    LeadStatus.REJECTED: "Rejected",
}

Fields = dict[str, str | None]
Write = Callable[[str, dict], None]  # (the record's id in the CRM, the fields to set)


def fit(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def fields_for(settings: Settings, crm: str, entry: WinLossEntry) -> Fields:
    """What is set on the deal: the customer's words as stored (no Slack escaping: it is
    the CRM's field) and the category. No category clears the CRM's (HubSpot's empty
    string, Pipedrive's null), so an edit that removes it is mirrored."""
    if crm == HUBSPOT:
        reason, category = (
            settings.hubspot_writeback_reason_property,
            settings.hubspot_writeback_category_property,
        )
        empty: str | None = ""
    else:
        reason, category = (
            settings.pipedrive_writeback_reason_field,
            settings.pipedrive_writeback_category_field,
        )
        empty = None
    fields: Fields = {}
    if reason:
        fields[reason] = fit(entry.reason)
    if category:
        fields[category] = entry.reason_category or empty
    return fields


def lead_fields_for(settings: Settings, crm: str, rating: str, reason: str | None) -> Fields:
    """What is set on a rated lead's record: the rating (HubSpot: the lead status value it
    maps to; Pipedrive: its name) and a rejection's reason from the taxonomy. Any other
    rating clears the reason (HubSpot's empty string, Pipedrive's null), so a rejection
    changed to an acceptance leaves no stale reason behind."""
    if crm == HUBSPOT:
        status, why = (
            settings.hubspot_writeback_lead_status_property,
            settings.hubspot_writeback_lead_reason_property,
        )
        value: str | None = dict(settings.hubspot_writeback_lead_statuses)[rating]
        empty: str | None = ""
    else:
        status, why = (
            settings.pipedrive_writeback_lead_rating_field,
            settings.pipedrive_writeback_lead_reason_field,
        )
        value, empty = PIPEDRIVE_RATINGS[LeadStatus(rating)], None
    fields: Fields = {}
    if status:
        fields[status] = value
    if why:
        fields[why] = reason if rating == LeadStatus.REJECTED and reason else empty
    return fields


def failed(status: int, message: str, retry_after: float | None) -> CallFailed:
    """A CRM's refusal (HubSpotError / PipedriveError: status 0 when unreachable) as the
    outbox settles it."""
    error = f"HTTP {status} {message}" if status else f"unreachable: {message}"
    if status == 429:
        return CallFailed(
            error, status=429, retry_after=1.0 if retry_after is None else retry_after
        )
    if status == 0 or status >= 500:
        return CallFailed(error, status=status or None)
    if status in (401, 403):  # the token (or its scope): an admin fixes it; keep trying
        return CallFailed(error, status=status)
    return CallFailed(error, status=status, permanent=True)


def _kind(render: Render, writes: Mapping[str, Write], what: str, hint: str) -> Kind:
    """A write-back kind: ``render`` gives the payload ``{"id", "fields"}``, ``send`` hands
    it to the CRM's ``writes`` (by the message's channel) and maps a refusal by
    :func:`failed`; a refusal given up is logged (``what`` was written, ``hint``: where to
    look)."""

    def send(m: Outgoing) -> Delivered:
        assert m.payload is not None  # rendered at claim time
        record_id, fields = m.payload["id"], m.payload["fields"]
        write = writes.get(m.channel)
        if write is None:
            raise CallFailed(f"no write-back to {m.channel!r}", permanent=True)
        try:
            write(record_id, fields)
        except (HubSpotError, PipedriveError) as err:
            message = str(err).partition(": ")[2] or str(err)
            raise failed(err.status, message, err.retry_after) from None
        return Delivered(m.channel, record_id[:32])

    def refused(session: Session, m: Outgoing, error: str, now: datetime) -> None:
        log.error(
            "writing %s %s back to %s was refused (%s); given up. %s",
            what,
            m.subject_id,
            m.channel,
            error,
            hint,
        )

    return Kind(render=render, send=send, refused=refused)


def register(kinds: Kinds, settings: Settings) -> None:
    """The ``crm_writeback`` and ``lead_writeback`` kinds (called by
    bot.delivery.kinds.register_all)."""

    def hubspot() -> HubSpotApi:
        assert settings.hubspot_access_token is not None
        return HubSpotApi(api_url=settings.hubspot_api_url, token=settings.hubspot_access_token)

    def pipedrive() -> PipedriveApi:
        assert settings.pipedrive_api_token is not None
        return PipedriveApi(api_url=settings.pipedrive_api_url, token=settings.pipedrive_api_token)

    def render_entry(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        entry = session.get(WinLossEntry, m.subject_id)
        if entry is None or m.channel not in settings.writeback_crms:
            return None  # the entry is gone, or write-back was turned off since
        crm, _, deal_id = (entry.deal.external_id or "").partition(":")
        if crm != m.channel or not deal_id:
            return None
        fields = fields_for(settings, crm, entry)
        return rendered(m, payload={"id": deal_id, "fields": fields})

    def render_lead(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        lead = session.get(Lead, m.subject_id)
        if lead is None or not lead.ratings:
            return None
        found = lead_record(lead.external_id, settings.lead_writeback_crms)
        if found is None or found[0] != m.channel:
            return None  # write-back was turned off since
        latest = lead.ratings[-1]
        fields = lead_fields_for(settings, m.channel, latest.rating, latest.reason)
        return rendered(m, payload={"id": found[1], "fields": fields})

    kinds.add(
        OutboxKind.CRM_WRITEBACK,
        _kind(
            render_entry,
            {
                HUBSPOT: lambda deal, fields: hubspot().update_deal(deal, fields),
                PIPEDRIVE: lambda deal, fields: pipedrive().update_deal(deal, fields),
            },
            "win/loss entry",
            "closeloop check says whether the deal's fields exist",
        ),
    )
    kinds.add(
        OutboxKind.LEAD_WRITEBACK,
        _kind(
            render_lead,
            {
                HUBSPOT: lambda contact, fields: hubspot().update_contact(contact, fields),
                PIPEDRIVE: lambda lead, fields: pipedrive().update_lead(lead, fields),
            },
            "the rating of lead",
            "closeloop check says whether the contact's property or the lead's fields exist",
        ),
    )
