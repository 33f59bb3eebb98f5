"""Write-back: a logged win/loss entry's words and category set on its CRM deal, so the CRM
stays the single source of truth (docs/crm-hubspot.md, docs/crm-pipedrive.md).

The outbox carries it as any message (kind ``crm_writeback``, op CALL, ``channel`` the CRM,
subject the entry; bot.services.outgoing.crm_writeback): enqueued with the entry and again
with every edit, rendered when it is sent from the entry as it is then, and sent by this
kind's own ``send`` hook instead of Slack. The write sets the deal's fields to the entry's
current values, so making it twice is harmless; it is neither paced nor looked for first.

How a CRM's answer is settled (:func:`failed`): a 429 is retried after its Retry-After, a
5xx or no answer with the outbox's backoff, a 401/403 too (the token is fixed by an admin,
as the bot is invited to a channel); any other 4xx (no such property or field, no such deal,
a value refused) is given up, logged, and kept with the message (``last_error``).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from bot.config import Settings
from bot.delivery.outbox import CallFailed, Delivered, Kind, Kinds, rendered
from bot.intake.hubspot_api import TEXT_LIMIT, HubSpotApi, HubSpotError
from bot.intake.pipedrive_api import PipedriveApi, PipedriveError
from bot.models import OutboxKind, WinLossEntry
from bot.services.outbox import Outgoing

log = logging.getLogger(__name__)

HUBSPOT, PIPEDRIVE = "hubspot", "pipedrive"
ELLIPSIS = "…"


def fit(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def fields_for(settings: Settings, crm: str, entry: WinLossEntry) -> dict[str, str | None]:
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
    fields: dict[str, str | None] = {}
    if reason:
        fields[reason] = fit(entry.reason)
    if category:
        fields[category] = entry.reason_category or empty
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


def register(kinds: Kinds, settings: Settings) -> None:
    """The ``crm_writeback`` kind (called by bot.delivery.kinds.register_all)."""

    def render(session: Session, m: Outgoing, now: datetime) -> Outgoing | None:
        entry = session.get(WinLossEntry, m.subject_id)
        if entry is None or m.channel not in settings.writeback_crms:
            return None  # the entry is gone, or write-back was turned off since
        crm, _, deal_id = (entry.deal.external_id or "").partition(":")
        if crm != m.channel or not deal_id:
            return None
        fields = fields_for(settings, crm, entry)
        return rendered(m, payload={"deal_id": deal_id, "fields": fields})

    def send(m: Outgoing) -> Delivered:
        assert m.payload is not None  # rendered at claim time
        deal_id, fields = m.payload["deal_id"], m.payload["fields"]
        try:
            if m.channel == HUBSPOT:
                assert settings.hubspot_access_token is not None
                HubSpotApi(
                    api_url=settings.hubspot_api_url, token=settings.hubspot_access_token
                ).update_deal(deal_id, fields)
            elif m.channel == PIPEDRIVE:
                assert settings.pipedrive_api_token is not None
                PipedriveApi(
                    api_url=settings.pipedrive_api_url, token=settings.pipedrive_api_token
                ).update_deal(deal_id, fields)
            else:
                raise CallFailed(f"no write-back to {m.channel!r}", permanent=True)
        except (HubSpotError, PipedriveError) as err:
            message = str(err).partition(": ")[2] or str(err)
            raise failed(err.status, message, err.retry_after) from None
        return Delivered(m.channel, deal_id[:32])

    def refused(session: Session, m: Outgoing, error: str, now: datetime) -> None:
        log.error(
            "writing win/loss entry %s back to %s was refused (%s); given up. "
            "closeloop check says whether the deal's fields exist",
            m.subject_id,
            m.channel,
            error,
        )

    kinds.add(OutboxKind.CRM_WRITEBACK, Kind(render=render, send=send, refused=refused))
