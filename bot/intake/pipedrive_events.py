"""What Pipedrive's webhooks v2 deliveries say, read the same way for deals and leads: ids and
text (:func:`text`), instants (:func:`instant`, :func:`event_time`), and which of the stored
deliveries about one record is the latest (:func:`superseded`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from bot.models import CrmSource
from bot.services import crm_inbox

SOURCE = CrmSource.PIPEDRIVE.value


def text(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text[:80] if text else None


def event_time(data: Mapping[str, object]) -> float:
    """When the event happened (epoch seconds): ``meta.timestamp``, documented as a
    10-character timestamp and shown as ISO 8601 in the format example (both read, and
    milliseconds too); else the deal's ``update_time``; else 0."""
    meta = data.get("meta")
    deal = data.get("data")
    for value in (
        meta.get("timestamp") if isinstance(meta, dict) else None,
        deal.get("update_time") if isinstance(deal, dict) else None,
    ):
        found = instant(value)
        if found is not None:
            return found
    return 0.0


def instant(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        number = float(value)
        return number / 1000 if number > 1e11 else number  # milliseconds
    if isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "T", 1).replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None


def superseded(session: Session, *, prefix: str, delivery_id: str) -> str | None:
    """The delivery id of an event about the same record (its deliveries' ids start with
    ``prefix``: ``deal:<id>:``, ``lead:<id>:``) that happened after this one
    (``meta.timestamp``; the same second: the one received later), stored and not given up;
    None when this one is the latest."""
    rows = crm_inbox.about_one_record(session, source=SOURCE, prefix=prefix)
    mine = next((r for r in rows if r.delivery_id == delivery_id), None)
    if mine is None:
        return None
    own_key = (event_time(json.loads(mine.body)), mine.id)
    for row in rows:
        if row.id == mine.id:
            continue
        try:
            other = json.loads(row.body)
        except ValueError:
            continue
        if (event_time(other), row.id) > own_key:
            return row.delivery_id
    return None
