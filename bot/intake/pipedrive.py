"""POST /hooks/pipedrive: Pipedrive's webhooks (v2), authenticated, stored, then processed from
storage.

Pipedrive signs nothing: a webhook carries the HTTP basic auth credentials it was created with
(``http_auth_user`` / ``http_auth_password``) in an ``Authorization: Basic`` header. They are
compared in constant time (digests of equal length, both parts always compared) and never
logged or stored.

A v2 delivery is one JSON object: ``meta`` (``action`` create/change/delete, ``entity``, ``id``
the id of the event, ``entity_id``, ``timestamp``, ``attempt`` counting Pipedrive's retries
...), ``data`` (the deal as of this event: ``status``, ``title``, ``value``, ``currency``,
``lost_reason``, ``owner_id``, ``won_time`` / ``lost_time`` ...) and ``previous`` (only the
fields this event changed). Lead events are leads handed to sales
(:mod:`bot.intake.pipedrive_leads`). Only deal events that change the deal's status (or create
a deal already won or lost) are stored, keyed by the deal id and ``meta.id``: a retry repeats
the event id (``meta.attempt`` counts up), so it is a duplicate. Everything else is answered
and dropped.

The delivery carries the deal's state, so processing reads nothing from Pipedrive but the
owner's email. Deliveries about one deal may arrive out of order (retries are 3, 30 and 150
seconds apart): a status change older (``meta.timestamp``) than another one stored for the same
deal is superseded and does nothing, so the deal ends in its latest state.

The daily reconciliation (:func:`closed_since`) lists the won and lost deals from the API and
stores each as a delivery of the same shape, with a ``meta.action`` of Closeloop's own
(``sync``, which the webhook endpoint never takes) and ``meta.id``
``sync:<deal id>:<status>:<close time>``: found again in the same state, it is a duplicate;
ordered with the webhooks' deliveries by its ``meta.timestamp`` (the close time).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from bot.db import session_scope
from bot.intake import pipedrive_leads
from bot.intake.errors import NotConfigured, TryLater, Unprocessable
from bot.intake.pipedrive_api import DEALS_PAGE, PipedriveApi, PipedriveError, log_api_error
from bot.intake.pipedrive_events import instant, superseded, text
from bot.jobs.deals import nudge_new_deal
from bot.listeners.crm_webhook import Answer
from bot.models import CrmSource
from bot.runtime import Runtime
from bot.services import crm_inbox, deal_input
from bot.services import winloss as wl_svc
from bot.services.deal_input import DealIn, InvalidField

log = logging.getLogger(__name__)

SOURCE = CrmSource.PIPEDRIVE.value
PATH = "/hooks/pipedrive"
# A v2 delivery is one object: the deal's crucial fields, its custom fields and what changed.
# A few KiB in practice; custom fields of long text could make it larger. 256 KiB (as for
# HubSpot) leaves room; beyond it is refused (413) before it is read.
MAX_BODY = 256 * 1024
KEPT_HEADERS = ("user-agent", "content-type")  # never the Authorization header
CLOSED = ("won", "lost")
STATUSES = ("open", *CLOSED)
REALM = 'Basic realm="closeloop", charset="UTF-8"'
SYNC_ACTION = "sync"  # meta.action of the reconciliation's deliveries (never Pipedrive's)
LIST_TRIES = 4  # a page the deal list refuses with 429 is asked for this many times at most
LIST_MAX_WAIT = 10.0  # seconds waited at most for a 429's Retry-After (a 2-second window)
# What a delivery of the reconciliation keeps of a v1 deal (as a v2 webhook's ``data``).
SYNC_FIELDS = (
    "id",
    "status",
    "title",
    "value",
    "currency",
    "lost_reason",
    "won_time",
    "lost_time",
    "close_time",
    "update_time",
)


# --- authenticating -----------------------------------------------------------------------


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def credentials_valid(authorization: str | None, *, user: str, password: str) -> bool:
    """Whether ``authorization`` is ``Basic base64(user:password)`` with these credentials.

    Compared in constant time: digests of equal length, user and password both compared
    whatever the first comparison said."""
    if not authorization:
        return False
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    given_user, colon, given_password = decoded.partition(b":")
    user_ok = hmac.compare_digest(_digest(given_user), _digest(user.encode()))
    password_ok = hmac.compare_digest(_digest(given_password), _digest(password.encode()))
    return bool(colon) & user_ok & password_ok


# --- receiving ----------------------------------------------------------------------------


def receive(rt: Runtime, *, body: bytes, headers: Mapping[str, str]) -> tuple[Answer, list[int]]:
    """Authenticate and store one request from Pipedrive; the answer and the deliveries stored
    now (to be processed after the answer)."""
    s = rt.settings
    if not s.pipedrive_configured:
        return Answer(
            503,
            {
                "ok": False,
                "error": "Pipedrive is not configured: set PIPEDRIVE_WEBHOOK_USER, "
                "PIPEDRIVE_WEBHOOK_PASSWORD and PIPEDRIVE_API_TOKEN",
            },
        ), []
    assert s.pipedrive_webhook_user is not None and s.pipedrive_webhook_password is not None
    lower = {k.lower(): v for k, v in headers.items()}
    if not credentials_valid(
        lower.get("authorization"),
        user=s.pipedrive_webhook_user,
        password=s.pipedrive_webhook_password,
    ):
        log.warning("Pipedrive webhook: missing or wrong basic auth credentials")
        return Answer(401, {"ok": False, "error": "invalid credentials"}), []
    try:
        text = body.decode("utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        return Answer(400, {"ok": False, "error": f"body: malformed JSON: {err}"}), []
    nul = deal_input.field_with_nul(data) if isinstance(data, dict) else None
    if "\x00" in text or nul is not None:  # raw, or escaped as \u0000 in a string
        where = f"field {nul!r}" if nul else "the body"
        return Answer(400, {"ok": False, "error": f"body: {where} contains a NUL character"}), []
    try:
        delivery_id = _delivery_id(data, webhook=True)
    except Unprocessable as err:
        return Answer(400, {"ok": False, "error": f"body: {err}"}), []
    if delivery_id is None:
        return Answer(200, {"ok": True, "stored": 0, "duplicates": 0, "ignored": 1}), []
    kept = {k: lower[k] for k in KEPT_HEADERS if k in lower}
    # A database that cannot store them: the server answers 503 (bot.server), the CRM retries.
    with session_scope(rt.session_factory) as session:
        pk = crm_inbox.store(
            session,
            source=SOURCE,
            delivery_id=delivery_id,
            body=text,
            headers=kept,
            now=rt.now(),
        )
    stored = [pk] if pk is not None else []
    return Answer(
        200, {"ok": True, "stored": len(stored), "duplicates": 1 - len(stored), "ignored": 0}
    ), stored


def _delivery_id(data: object, *, webhook: bool = False) -> str | None:
    """The key of a deal's status change (``deal:<deal id>:<meta.id>``); None for an event to
    answer and drop. Unprocessable for a body that is not a Pipedrive v2 webhook. The
    reconciliation's own action (``sync``) only when not from the ``webhook``."""
    if not isinstance(data, dict) or not isinstance(data.get("meta"), dict):
        raise Unprocessable("must be a Pipedrive webhook: a JSON object with a meta object")
    meta = data["meta"]
    if "v" in data or "current" in data or str(meta.get("version", "2")).startswith("1"):
        raise Unprocessable("a webhooks v1 delivery: create the webhook with version 2.0")
    event_id = text(meta.get("id"))
    if event_id is None:
        raise Unprocessable("meta.id (the event's id) is required")
    actions = ("create", "change") if webhook else ("create", "change", SYNC_ACTION)
    if meta.get("entity") == "lead" and meta.get("action") in ("create", "change"):
        return pipedrive_leads.delivery_id(data, event_id)
    if meta.get("entity") != "deal" or meta.get("action") not in actions:
        return None
    if not _status_changed(data):
        return None
    deal_id = _deal_id(data)
    if deal_id is None:
        raise Unprocessable("the deal's id (data.id or meta.entity_id) is required")
    return f"deal:{deal_id}:{event_id}"


def _status_changed(data: Mapping[str, object]) -> bool:
    """A deal created won or lost, or whose status this event changed (``previous`` holds
    only the fields that changed): a close, or a reopening."""
    deal = data.get("data")
    status = deal.get("status") if isinstance(deal, dict) else None
    if status not in STATUSES:
        return False
    meta = data["meta"]
    assert isinstance(meta, dict)
    if meta.get("action") in ("create", SYNC_ACTION):
        return status in CLOSED
    previous = data.get("previous")
    return isinstance(previous, dict) and "status" in previous and previous["status"] != status


def _deal_id(data: Mapping[str, object]) -> str | None:
    deal = data.get("data")
    meta = data.get("meta")
    found = text(deal.get("id")) if isinstance(deal, dict) else None
    if found is None and isinstance(meta, dict):
        found = text(meta.get("entity_id"))
    return found


# --- reconciling --------------------------------------------------------------------------


def closed_since(rt: Runtime, since: datetime) -> Iterator[list[tuple[str, str]]]:
    """The deals Pipedrive has won or lost at ``since`` or later, a page at a time, as
    deliveries to store: (key, body).

    v1's ``GET /deals`` (what PIPEDRIVE_API_URL serves) filters by status but not by time, so
    each status is read most recently updated first (``sort=update_time DESC``) until a deal
    updated before ``since``: a deal closed since then was updated since then. Those whose
    close time (``won_time`` / ``lost_time``, else ``close_time``) is ``since`` or later are
    kept. Each becomes a delivery shaped as a webhook's (the deal as ``data``), keyed
    ``deal:<id>:sync:<id>:<status>:<close time>``: found again in the same state, a
    duplicate; processed as a webhook's (receive_deal takes a deal in once).

    Raises NotConfigured without Pipedrive's settings, TryLater when Pipedrive cannot be read
    (after the pages already yielded). A 429 is waited out (Retry-After, at most
    LIST_MAX_WAIT seconds) and the page asked again, LIST_TRIES times at most."""
    s = rt.settings
    if not s.pipedrive_configured:
        raise NotConfigured(
            "Pipedrive is off (PIPEDRIVE_WEBHOOK_USER, PIPEDRIVE_WEBHOOK_PASSWORD and "
            "PIPEDRIVE_API_TOKEN)"
        )
    assert s.pipedrive_api_token is not None
    api = PipedriveApi(api_url=s.pipedrive_api_url, token=s.pipedrive_api_token)
    floor = since.timestamp()
    for status in CLOSED:
        start: int | None = 0
        while start is not None:
            found, following = _deals_page(api, status=status, start=start)
            page = []
            older = False
            for deal in found:
                updated = instant(deal.get("update_time"))
                if updated is not None and updated < floor:
                    older = True  # sorted by update time: the rest are older still
                    break
                item = _synced(deal, status=status, floor=floor)
                if item is not None:
                    page.append(item)
            if page:
                yield page
            start = None if older else following


def _deals_page(api: PipedriveApi, *, status: str, start: int) -> tuple[list[dict], int | None]:
    for attempt in range(1, LIST_TRIES + 1):
        try:
            return api.closed_deals_page(status=status, start=start, limit=DEALS_PAGE)
        except PipedriveError as err:
            if err.status != 429 or attempt == LIST_TRIES:
                raise TryLater(str(err)) from None
            wait = min(err.retry_after if err.retry_after is not None else 1.0, LIST_MAX_WAIT)
            log.info("Pipedrive's deal list is rate-limited: asking again in %.1f s", wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _synced(deal: Mapping[str, object], *, status: str, floor: float) -> tuple[str, str] | None:
    """(key, body) of a listed deal closed at ``floor`` or later; None otherwise."""
    deal_id = text(deal.get("id"))
    if deal_id is None or deal.get("status") != status:
        return None
    field = "won_time" if status == "won" else "lost_time"
    closed = instant(deal.get(field)) or instant(deal.get("close_time"))
    if closed is None or closed < floor:
        return None
    when = datetime.fromtimestamp(closed, UTC).isoformat().replace("+00:00", "Z")
    data = {k: deal.get(k) for k in SYNC_FIELDS}
    owner = deal.get("owner_id", deal.get("user_id"))  # v1: user_id, an object with its id
    data["owner_id"] = owner.get("id") if isinstance(owner, dict) else owner
    body = {
        "meta": {
            "action": SYNC_ACTION,
            "entity": "deal",
            "entity_id": deal_id,
            "id": f"sync:{deal_id}:{status}:{when}",
            "timestamp": when,
            "version": "2.0",
        },
        "data": data,
        "previous": None,
    }
    key = _delivery_id(body)
    assert key is not None
    return key, json.dumps(body, separators=(",", ":"))


# --- processing ---------------------------------------------------------------------------


def process(rt: Runtime, body: str) -> str:
    """Turn one stored status change into a closed deal (or nothing); what came of it.

    Raises TryLater when the owner cannot be read from Pipedrive now."""
    data = json.loads(body)
    delivery_id = _delivery_id(data)
    if delivery_id is not None and delivery_id.startswith("lead:"):
        return pipedrive_leads.process(rt, data, delivery_id)
    deal_id = _deal_id(data)
    if delivery_id is None or deal_id is None:
        return "not a deal's status change"
    s = rt.settings
    if not s.pipedrive_configured:
        raise TryLater("Pipedrive is not configured any more")
    assert s.pipedrive_api_token is not None
    deal = data["data"]
    status = deal["status"]
    with session_scope(rt.session_factory) as session:
        later = superseded(session, prefix=f"deal:{deal_id}:", delivery_id=delivery_id)
    if later:
        return f"deal {deal_id} {status}: superseded by a later change ({later})"
    if status not in CLOSED:
        return f"deal {deal_id} reopened (status {status}): nothing to do"
    owner_email = None
    owner_id = text(deal.get("owner_id"))
    if owner_id is not None:
        api = PipedriveApi(api_url=s.pipedrive_api_url, token=s.pipedrive_api_token)
        try:
            owner_email = api.user_email(owner_id)
        except PipedriveError as err:
            log_api_error(err)
            raise TryLater(str(err)) from None
    closed = _deal_in(deal_id, deal, outcome=status, owner_email=owner_email, now=rt.now())
    notes = [f"deal {deal_id} closed {status}"]
    currency = text(deal.get("currency"))
    if closed.amount is not None and currency and currency.upper() != s.currency.upper():
        notes.append(f"amount in {currency.upper()}, not CURRENCY {s.currency}: stored as is")
        log.info(
            "Pipedrive deal %s: its value is in %s, CURRENCY is %s; the amount is stored as is",
            deal_id,
            currency.upper(),
            s.currency,
        )
    with session_scope(rt.session_factory) as session:
        later = superseded(session, prefix=f"deal:{deal_id}:", delivery_id=delivery_id)
        if later:
            return f"deal {deal_id} {status}: superseded by a later change ({later})"
        row, created = wl_svc.receive_deal(
            session,
            deal=closed,
            deadline_hours=s.winloss_deadline_hours,
            now=rt.now(),
            origin="crm",
        )
        session.flush()
        deal_pk = row.id
        changed = not created and wl_svc.refresh_crm_deal(session, deal_pk=deal_pk, deal=closed)
    if created:
        nudge_new_deal(rt, deal_pk)
        notes.append(f"deal {deal_pk} received")
    else:
        notes.append(f"deal {deal_pk} " + ("updated to this change" if changed else "unchanged"))
    return "; ".join(notes)


def _deal_in(
    deal_id: str,
    deal: Mapping[str, object],
    *,
    outcome: str,
    owner_email: str | None,
    now: datetime,
) -> DealIn:
    closed_at, date_only = now, False
    field = "won_time" if outcome == "won" else "lost_time"
    when = deal.get(field) or deal.get("close_time")
    if isinstance(when, str) and when.strip():
        # v2 sends ISO 8601 ("2025-04-15T15:39:01Z"); v1 and the API's v1 "2025-04-15 15:39:01".
        text = when.strip().replace(" ", "T", 1)  # no offset: UTC, as Pipedrive means it
        try:
            closed_at, date_only = deal_input.parse_closed_at(text, now=now, field_name=field)
        except InvalidField as err:
            raise Unprocessable(f"deal {deal_id}: {err}") from None
    try:
        amount = deal_input.parse_amount(deal.get("value"))
    except InvalidField:
        amount = None
    reason = deal.get("lost_reason") if outcome == "lost" else None
    reason = reason.strip() if isinstance(reason, str) else None
    title = deal.get("title")
    name = title.strip() if isinstance(title, str) and title.strip() else None
    return DealIn(
        external_id=f"pipedrive:{deal_id}",
        name=(name or f"Pipedrive deal {deal_id}")[:255],
        outcome=outcome,
        closed_at=closed_at,
        owner_email=owner_email,
        amount=amount,
        closed_on_date_only=date_only,
        crm_reason=reason[: wl_svc.MAX_TEXT] if reason else None,
    )
