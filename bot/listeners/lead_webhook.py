"""POST /hooks/lead: a lead marketing hands to sales, from any system, signed exactly like
POST /hooks/deal-closed (DEALS_WEBHOOK_SECRET, ``X-Closeloop-Request-Timestamp`` and
``X-Closeloop-Signature``; the same limits on size and nesting).

The lead is stored (once per ``lead_id``) before the answer: 201 when new, 200 for one stored
before; 503 when the database could not store it (the sender tries again). The owner's DM
is looked up and queued after the answer (``run_later``), and by the tick when that does
not happen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from bot.jobs.leads import nudge_new_lead, receive_lead
from bot.listeners.crm_webhook import Answer, signed_json
from bot.runtime import Runtime
from bot.services.deal_input import InvalidField
from bot.services.leads import parse_lead

log = logging.getLogger(__name__)

PATH = "/hooks/lead"


def handle_lead(
    rt: Runtime,
    *,
    body: bytes,
    headers: Mapping[str, str],
    run_later: Callable[[Callable[[], None]], None],
) -> Answer:
    """Verify, validate and store one lead; the owner's DM is queued via ``run_later``."""
    data = signed_json(rt, body=body, headers=headers, what="lead")
    if isinstance(data, Answer):
        return data
    try:
        lead = parse_lead(data, now=rt.now())
    except InvalidField as err:
        return Answer(400, {"ok": False, "error": str(err), "field": err.field})
    lead_pk, created = receive_lead(rt, lead, origin="hook")  # the server: 503 if it cannot
    if created:
        run_later(lambda: nudge_new_lead(rt, lead_pk))
    return Answer(
        201 if created else 200,
        {"ok": True, "lead_id": lead.external_id, "duplicate": not created},
    )
