"""POST /hooks/deal-closed: closed deals from the CRM, signed like Slack's own requests (and
:func:`signed_json`, the verification POST /hooks/lead shares).

Headers ``X-Closeloop-Request-Timestamp`` and ``X-Closeloop-Signature`` =
``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{raw body}`` with ``DEALS_WEBHOOK_SECRET``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from slack_sdk.signature import Clock, SignatureVerifier

from bot.jobs.deals import nudge_new_deal, receive_deal
from bot.runtime import Runtime
from bot.services.deal_input import InvalidField, parse_deal

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "x-closeloop-request-timestamp"
SIGNATURE_HEADER = "x-closeloop-signature"
MAX_BODY = 64 * 1024
# A deal is a flat object; a CRM may nest its own details a few levels. Python's json parser
# recurses once a level and gives up (RecursionError, a 500) near 1,000.
MAX_DEPTH = 32
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}:]')


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
    data = signed_json(rt, body=body, headers=headers, what="deal")
    if isinstance(data, Answer):
        return data
    try:
        deal = parse_deal(data, now=rt.now())
    except InvalidField as err:
        return Answer(400, {"ok": False, "error": str(err), "field": err.field})
    deal_pk, created = receive_deal(rt, deal)
    if created:
        run_later(lambda: nudge_new_deal(rt, deal_pk))
    return Answer(
        201 if created else 200,
        {"ok": True, "deal_id": deal.external_id, "duplicate": not created},
    )


def signed_json(
    rt: Runtime, *, body: bytes, headers: Mapping[str, str], what: str
) -> dict | Answer:
    """The JSON object of a request signed with DEALS_WEBHOOK_SECRET (``v0=`` HMAC of the
    timestamp and the raw body, within five minutes), or the Answer refusing it: 503 unset,
    401 bad signature, 413 too large, 400 too deep, not JSON or not an object. ``what`` names
    the hook in the log."""
    secret = rt.settings.deals_webhook_secret
    if not secret:
        return Answer(503, {"ok": False, "error": "DEALS_WEBHOOK_SECRET is not configured"})
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get(TIMESTAMP_HEADER, "").strip()
    verifier = SignatureVerifier(secret, clock=_Clock(rt))
    if not timestamp.isdigit() or not verifier.is_valid(
        body=body, timestamp=timestamp, signature=lower.get(SIGNATURE_HEADER, "")
    ):
        log.warning(
            "%s webhook: bad or missing signature, or stale timestamp (body not logged)", what
        )
        return Answer(401, {"ok": False, "error": "invalid signature or timestamp"})
    if len(body) > MAX_BODY:
        return too_large(body)
    deep = nested_too_deep(body)
    if deep is not None:
        return _too_deep(deep)
    try:
        data = json.loads(body.decode("utf-8"), strict=False)  # a raw NUL: named by the parser
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        return Answer(400, {"ok": False, "error": f"body: malformed JSON: {err}", "field": "body"})
    if not isinstance(data, dict):
        return Answer(400, {"ok": False, "error": "body: must be a JSON object", "field": "body"})
    return data


def too_large(prefix: bytes) -> Answer:
    """The answer to a body longer than MAX_BODY, given the first bytes read of it: 413, or
    400 naming the field when those bytes already nest deeper than any deal can."""
    deep = nested_too_deep(prefix)
    if deep is not None:
        return _too_deep(deep)
    return Answer(413, {"ok": False, "error": f"body too large (at most {MAX_BODY} bytes)"})


def _too_deep(field: str) -> Answer:
    return Answer(
        400,
        {"ok": False, "error": f"{field}: nested deeper than {MAX_DEPTH} levels", "field": field},
    )


def nested_too_deep(body: bytes) -> str | None:
    """The top-level field (or "body") where ``body``'s JSON nests deeper than MAX_DEPTH, or
    None; found without parsing, so a truncated body is read as far as it goes."""
    depth, key, last = 0, "body", b""
    top_is_object = body.lstrip()[:1] == b"{"
    for token in _JSON_TOKEN.finditer(body):
        text = token.group()
        if text in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return key if top_is_object else "body"
        elif text in (b"]", b"}"):
            depth -= 1
            if depth <= 1:
                key = "body"
        elif text == b":":
            if depth == 1:
                key = _key(last)
        else:
            last = text
    return None


def _key(token: bytes) -> str:
    try:
        name = json.loads(token)
    except (ValueError, RecursionError):
        return "body"
    return name.replace("\x00", "") or "body" if isinstance(name, str) else "body"


class _Clock(Clock):
    """slack_sdk's verifier asks a clock for the time; ours is the runtime's."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def now(self) -> float:
        return self._rt.now().timestamp()
