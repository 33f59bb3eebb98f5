"""POST /hooks/hubspot: HubSpot's webhooks, verified, stored, then processed from storage.

Two kinds of request arrive here (and contact events, leads handed to sales: see
:mod:`bot.intake.hubspot_leads`):

* Webhooks API subscriptions (``deal.propertyChange`` on ``dealstage``, ``deal.creation``): a
  JSON array of events, each with its ``eventId``. Each deal event is stored as its own
  delivery, keyed by ``eventId`` (HubSpot retries an event, and may batch it differently);
  events about anything else are answered and dropped.
* A workflow's "Send a webhook" action: one JSON object with the deal's id (``objectId`` or
  ``hs_object_id``) and properties. It carries no event id, so its key is the deal id, close
  date and stage: the same workflow firing again for the same closed state is a duplicate.

Both carry ids that matter, not the truth: processing reads the deal as it is *now* from
HubSpot's CRM API, so deliveries that arrive out of order still end in the deal's latest state.

Signatures (HubSpot's "Validating requests"): ``X-HubSpot-Signature-v3`` when present (HMAC-
SHA256 of method + URI + body + ``X-HubSpot-Request-Timestamp``, base64; the timestamp within
5 minutes), otherwise ``X-HubSpot-Signature`` as ``X-HubSpot-Signature-Version`` says (v1:
SHA-256 hex of secret + body; v2: of secret + method + URI + body).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from bot.db import session_scope
from bot.intake import hubspot_leads
from bot.intake.errors import NotConfigured, TryLater, Unprocessable
from bot.intake.hubspot_api import HubSpotApi, HubSpotError, configured_api, log_api_error
from bot.jobs.deals import nudge_new_deal, receive_deal
from bot.listeners.crm_webhook import Answer
from bot.models import CrmSource
from bot.runtime import Runtime
from bot.services import crm_inbox, deal_input
from bot.services import winloss as wl_svc
from bot.services.deal_input import DealIn, InvalidField

log = logging.getLogger(__name__)

SOURCE = CrmSource.HUBSPOT.value
PATH = "/hooks/hubspot"
# HubSpot sends at most 100 events a request (a few hundred bytes each); a workflow's webhook
# holds the properties it was given. 256 KiB leaves room for both.
MAX_BODY = 256 * 1024
MAX_AGE_MS = 5 * 60 * 1000  # v3: a timestamp older than this is refused (and as far ahead)
KEPT_HEADERS = (
    "x-hubspot-signature-version",
    "x-hubspot-request-timestamp",
    "x-hubspot-correlation-id",
    "user-agent",
    "content-type",
)
DEAL_EVENTS = ("deal.creation", "deal.propertyChange", "deal.restore")
STAGE_PROPERTIES = ("dealstage",)
SEARCH_TRIES = 4  # a page the search refuses with 429 is asked for this many times at most
SEARCH_MAX_WAIT = 10.0  # seconds waited at most for a 429's Retry-After (HubSpot: 1 to 10)
# The URL-encoded characters HubSpot decodes in the URI it signs (v3), and only those.
_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_ENCODED = re.compile("|".join(_DECODED), re.IGNORECASE)


# --- verifying ----------------------------------------------------------------------------


def signed_uri(uri: str) -> str:
    """``uri`` as HubSpot signs it (v3): the listed URL-encoded characters decoded."""
    return _ENCODED.sub(lambda m: _DECODED[m.group().upper()], uri)


def request_uri(environ: Mapping[str, object], *, configured: str | None) -> str:
    """The URI HubSpot called: ``configured`` (HUBSPOT_WEBHOOK_URL, its scheme, host and path)
    when set, with the request's query string; otherwise rebuilt from the request, taking
    X-Forwarded-Proto and X-Forwarded-Host from a proxy (a forged one only makes the
    signature fail: it is an HMAC of the URI)."""
    query = str(environ.get("QUERY_STRING") or "")
    if configured:
        parts = urlsplit(configured)
        base = f"{parts.scheme}://{parts.netloc}{parts.path}"
        return base + (f"?{query}" if query else "")
    scheme = _first(environ.get("HTTP_X_FORWARDED_PROTO")) or str(environ.get("wsgi.url_scheme"))
    host = _first(environ.get("HTTP_X_FORWARDED_HOST")) or str(
        environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
    )
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")  # gunicorn / others: as sent
    if raw:
        path_query = str(raw)
    else:
        path_query = str(environ.get("SCRIPT_NAME") or "") + str(environ.get("PATH_INFO") or "")
        path_query += f"?{query}" if query else ""
    return f"{scheme}://{host}{path_query}"


def _first(value: object) -> str:
    return str(value or "").split(",")[0].strip()


def signature_valid(
    *,
    secret: str,
    method: str,
    uri: str,
    body: bytes,
    headers: Mapping[str, str],
    now: datetime,
) -> bool:
    """Whether the request carries a valid HubSpot signature (v3 when sent, else v1/v2)."""
    v3 = headers.get("x-hubspot-signature-v3")
    if v3 is not None:
        timestamp = headers.get("x-hubspot-request-timestamp", "").strip()
        if not timestamp.isdigit():
            return False
        if abs(now.timestamp() * 1000 - int(timestamp)) > MAX_AGE_MS:
            return False
        source = method.encode() + signed_uri(uri).encode() + body + timestamp.encode()
        digest = hmac.new(secret.encode(), source, hashlib.sha256).digest()
        return hmac.compare_digest(base64.b64encode(digest).decode(), v3.strip())
    signature = headers.get("x-hubspot-signature")
    if signature is None:
        return False
    version = headers.get("x-hubspot-signature-version", "v1").strip().lower()
    if version == "v1":
        source = secret.encode() + body
    elif version == "v2":
        source = secret.encode() + method.encode() + uri.encode() + body
    else:
        return False
    expected = hashlib.sha256(source).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


# --- receiving ----------------------------------------------------------------------------


def receive(
    rt: Runtime, *, method: str, uri: str, body: bytes, headers: Mapping[str, str]
) -> tuple[Answer, list[int]]:
    """Verify and store one request from HubSpot; the answer and the deliveries stored now
    (to be processed after the answer)."""
    s = rt.settings
    if not s.hubspot_configured:
        return Answer(
            503,
            {
                "ok": False,
                "error": "HubSpot is not configured: set HUBSPOT_CLIENT_SECRET and "
                "HUBSPOT_ACCESS_TOKEN",
            },
        ), []
    assert s.hubspot_client_secret is not None
    lower = {k.lower(): v for k, v in headers.items()}
    if not signature_valid(
        secret=s.hubspot_client_secret,
        method=method,
        uri=uri,
        body=body,
        headers=lower,
        now=rt.now(),
    ):
        log.warning("HubSpot webhook: bad or missing signature, or stale timestamp")
        return Answer(401, {"ok": False, "error": "invalid signature or timestamp"}), []
    try:
        text = body.decode("utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        return Answer(400, {"ok": False, "error": f"body: malformed JSON: {err}"}), []
    if "\x00" in text:
        return Answer(400, {"ok": False, "error": "body: contains a NUL character"}), []
    try:
        deliveries, ignored = _deliveries(data, text)
    except Unprocessable as err:
        return Answer(400, {"ok": False, "error": f"body: {err}"}), []
    kept = {k: lower[k] for k in KEPT_HEADERS if k in lower}
    now = rt.now()
    stored: list[int] = []
    # A database that cannot store them: the server answers 503 (bot.server), the CRM retries.
    with session_scope(rt.session_factory) as session:
        for delivery_id, raw in deliveries:
            pk = crm_inbox.store(
                session,
                source=SOURCE,
                delivery_id=delivery_id,
                body=raw,
                headers=kept,
                now=now,
            )
            if pk is not None:
                stored.append(pk)
    return Answer(
        200,
        {
            "ok": True,
            "stored": len(stored),
            "duplicates": len(deliveries) - len(stored),
            "ignored": ignored,
        },
    ), stored


def _deliveries(data: object, text: str) -> tuple[list[tuple[str, str]], int]:
    """(delivery id, body to store) for each deal event, and each contact event that can mean
    a lead handed over, in the request; and how many other events were dropped."""
    if isinstance(data, list):
        found, ignored = [], 0
        for event in data:
            if not isinstance(event, dict) or event.get("eventId") in (None, ""):
                # One malformed event must not cost the batch its good ones (a 400 would have
                # HubSpot retry, and drop, them all): it is logged and counted as ignored.
                log.warning("HubSpot webhook: an event without an eventId ignored")
                ignored += 1
                continue
            if hubspot_leads.is_contact_event(event):
                if not hubspot_leads.wanted(event):
                    ignored += 1
                    continue
                key = hubspot_leads.delivery_id(event)
                found.append((key, json.dumps(event, separators=(",", ":"))))
                continue
            kind = str(event.get("subscriptionType") or "")
            if kind not in DEAL_EVENTS or (
                kind == "deal.propertyChange" and event.get("propertyName") not in STAGE_PROPERTIES
            ):
                ignored += 1
                continue
            if event.get("objectId") in (None, ""):
                log.warning("HubSpot webhook: event %s has no objectId; ignored", event["eventId"])
                ignored += 1
                continue
            # Each event on its own (HubSpot retries an event, batched as it pleases).
            found.append((str(event["eventId"]), json.dumps(event, separators=(",", ":"))))
        return found, ignored
    if isinstance(data, dict):
        deal_id = _workflow_deal_id(data)
        if deal_id is None:
            raise Unprocessable("a workflow webhook needs the deal's objectId or hs_object_id")
        props = _workflow_properties(data)
        key = f"workflow:{deal_id}:{props.get('closedate') or ''}:{props.get('dealstage') or ''}"
        return [(key, text)], 0
    raise Unprocessable("must be a JSON array of events or a workflow's JSON object")


def _workflow_properties(data: Mapping[str, object]) -> dict[str, str]:
    """A workflow body's properties, flat: ``{"dealstage": {"value": "x"}}`` (HubSpot's
    default body), ``{"properties": {"dealstage": "x"}}`` or top-level ``"dealstage": "x"``
    (a customised body)."""
    flat: dict[str, str] = {}
    props = data.get("properties")
    for source in (data, props if isinstance(props, Mapping) else {}):
        for key, value in source.items():
            if isinstance(value, Mapping):
                value = value.get("value")
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                flat[str(key)] = str(value)
    return flat


def _workflow_deal_id(data: Mapping[str, object]) -> str | None:
    props = _workflow_properties(data)
    for key in ("objectId", "hs_object_id", "dealId", "deal_id"):
        value = props.get(key)
        if value and value.strip():
            return value.strip()[:64]
    return None


# --- reconciling --------------------------------------------------------------------------


def closed_since(rt: Runtime, since: datetime) -> Iterator[list[tuple[str, str]]]:
    """The deals HubSpot has in a closed won or lost stage with a close date ``since`` or
    later, a page at a time, as deliveries to store: (key, body). The key is the deal id,
    close date and stage (as a workflow's), so a deal found again in the same closed state
    is a duplicate; the body is processed as a workflow's (the deal read again, as it is now).

    Raises NotConfigured without HubSpot's settings, TryLater when HubSpot cannot be read
    (after the pages already yielded: what was found is kept). A 429 is waited out
    (Retry-After, at most SEARCH_MAX_WAIT seconds) and the page asked again, SEARCH_TRIES
    times at most."""
    s = rt.settings
    if not s.hubspot_configured:
        raise NotConfigured("HubSpot is off (HUBSPOT_CLIENT_SECRET and HUBSPOT_ACCESS_TOKEN)")
    assert s.hubspot_access_token is not None
    api = HubSpotApi(api_url=s.hubspot_api_url, token=s.hubspot_access_token)
    try:
        pipelines = api.pipelines()
    except HubSpotError as err:
        raise TryLater(str(err)) from None
    stages = sorted(
        {sid for stages in pipelines.values() for sid, st in stages.items() if st.outcome}
    )
    if not stages:
        return
    after: str | None = None
    while True:
        for attempt in range(1, SEARCH_TRIES + 1):
            try:
                found, after = api.closed_deals_page(since=since, stages=stages, after=after)
                break
            except HubSpotError as err:
                if err.status != 429 or attempt == SEARCH_TRIES:
                    raise TryLater(str(err)) from None
                wait = min(err.retry_after if err.retry_after is not None else 1.0, SEARCH_MAX_WAIT)
                log.info("HubSpot's search is rate-limited: asking again in %.1f s", wait)
                time.sleep(wait)
        page = []
        for props in found:
            deal_id = props.get("hs_object_id")
            if not deal_id:
                continue
            key = f"sync:{deal_id}:{props.get('closedate') or ''}:{props.get('dealstage') or ''}"
            body = {"objectId": deal_id, "properties": props}
            page.append((key, json.dumps(body, separators=(",", ":"))))
        yield page
        if after is None:
            return


# --- processing ---------------------------------------------------------------------------


def process(rt: Runtime, body: str) -> str:
    """Turn one stored delivery into a closed deal (or nothing); what came of it.

    Raises TryLater when HubSpot cannot be read now, Unprocessable when it never will be.
    """
    data = json.loads(body)
    if isinstance(data, dict) and hubspot_leads.is_contact_event(data):
        return hubspot_leads.process(rt, data)
    if isinstance(data, dict) and "eventId" not in data:
        deal_id = _workflow_deal_id(data)
    else:
        deal_id = str(data.get("objectId") or "") or None
    if not deal_id:
        raise Unprocessable("no deal id")
    api = configured_api(rt.settings)
    try:
        props = api.deal(deal_id)
    except HubSpotError as err:
        if err.not_found:
            return f"deal {deal_id} is not in HubSpot (deleted?)"
        log_api_error(err)
        raise TryLater(str(err)) from None
    stage_id = props.get("dealstage")
    if stage_id is None:
        return f"deal {deal_id} has no stage"
    try:
        stage = api.stage(props.get("pipeline"), stage_id)
        owner_email = None
        if props.get("hubspot_owner_id"):
            owner_email = api.owner_email(str(props["hubspot_owner_id"]))
    except HubSpotError as err:
        log_api_error(err)
        raise TryLater(str(err)) from None
    if stage is None or stage.outcome is None:
        return f"deal {deal_id}: stage {stage_id!r} is not closed won or lost"
    deal = _deal_in(deal_id, props, outcome=stage.outcome, owner_email=owner_email, now=rt.now())
    deal_pk, created = receive_deal(rt, deal, origin="crm")
    if created:
        nudge_new_deal(rt, deal_pk)
        return f"deal {deal_id} closed {stage.outcome}: deal {deal_pk} received"
    with session_scope(rt.session_factory) as session:
        changed = wl_svc.refresh_crm_deal(session, deal_pk=deal_pk, deal=deal)
    return f"deal {deal_id} closed {stage.outcome}: deal {deal_pk} " + (
        "updated to HubSpot's latest" if changed else "already received"
    )


def _deal_in(
    deal_id: str,
    props: Mapping[str, str | None],
    *,
    outcome: str,
    owner_email: str | None,
    now: datetime,
) -> DealIn:
    closed_at, date_only = now, False
    closedate = props.get("closedate")
    if closedate:
        if closedate.isdigit():  # epoch milliseconds (older bodies)
            closedate = datetime.fromtimestamp(int(closedate) / 1000, UTC).isoformat()
        try:
            closed_at, date_only = deal_input.parse_closed_at(
                closedate, now=now, field_name="closedate"
            )
        except InvalidField as err:
            raise Unprocessable(f"deal {deal_id}: {err}") from None
    try:
        amount = deal_input.parse_amount(props.get("amount"))
    except InvalidField:
        amount = None
    reason = props.get("closed_won_reason" if outcome == "won" else "closed_lost_reason")
    return DealIn(
        external_id=f"hubspot:{deal_id}",
        name=(props.get("dealname") or f"HubSpot deal {deal_id}").strip()[:255],
        outcome=outcome,
        closed_at=closed_at,
        owner_email=owner_email,
        amount=amount,
        closed_on_date_only=date_only,
        crm_reason=reason.strip()[: wl_svc.MAX_TEXT] if reason and reason.strip() else None,
    )
