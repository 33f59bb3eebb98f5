"""POST /hooks/deal-closed: closed deals from the CRM, signed like Slack's own requests.

Headers ``X-Closeloop-Request-Timestamp`` and ``X-Closeloop-Signature`` =
``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{raw body}`` with ``DEALS_WEBHOOK_SECRET``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from slack_sdk.signature import Clock, SignatureVerifier

from bot.jobs.deals import nudge_new_deal, receive_deal
from bot.runtime import Runtime
from bot.services.winloss import InvalidField, parse_deal

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "x-closeloop-request-timestamp"
SIGNATURE_HEADER = "x-closeloop-signature"
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict


def handle_deal_closed(
    rt: Runtime,
    *,
    body: bytes,
    headers: Mapping[str, str],
    run_later: Callable[[Callable[[], None]], None],
) -> Answer:
    """Verify, validate and store one closed deal; the owner's nudge runs via ``run_later``."""
    secret = rt.settings.deals_webhook_secret
    if not secret:
        return Answer(503, {"ok": False, "error": "DEALS_WEBHOOK_SECRET is not configured"})
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get(TIMESTAMP_HEADER, "").strip()
    verifier = SignatureVerifier(secret, clock=_Clock(rt))
    if not timestamp.isdigit() or not verifier.is_valid(
        body=body, timestamp=timestamp, signature=lower.get(SIGNATURE_HEADER, "")
    ):
        log.warning("deal webhook: bad or missing signature, or stale timestamp (body not logged)")
        return Answer(401, {"ok": False, "error": "invalid signature or timestamp"})
    if len(body) > MAX_BODY:
        return Answer(413, {"ok": False, "error": "body too large"})
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return Answer(400, {"ok": False, "error": f"body: malformed JSON: {err}", "field": "body"})
    try:
        deal = parse_deal(data)
    except InvalidField as err:
        return Answer(400, {"ok": False, "error": str(err), "field": err.field})
    deal_pk, created = receive_deal(rt, deal)
    if created:
        run_later(lambda: nudge_new_deal(rt, deal_pk))
    return Answer(
        201 if created else 200,
        {"ok": True, "deal_id": deal.external_id, "duplicate": not created},
    )


class _Clock(Clock):
    """slack_sdk's verifier asks a clock for the time; ours is the runtime's."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def now(self) -> float:
        return self._rt.now().timestamp()
