"""POST /hooks/salesforce: Salesforce's Outbound Messages, authenticated, stored, then
processed from storage.

An Outbound Message is a SOAP request of the ``notifications()`` call: the org's
``OrganizationId`` and up to 100 ``Notification`` elements, each with its own ``Id`` and the
record (``sObject``) with the fields the admin chose. Salesforce waits for a SOAP
``notificationsResponse`` with ``Ack`` true; anything else is retried (the interval growing to
two hours) for 24 hours, then dropped.

Authentication (the messages are not signed): the secret (SALESFORCE_WEBHOOK_SECRET) as the
password of HTTP basic auth, or as ``?token=`` in the endpoint URL, compared in constant time;
then the message's ``OrganizationId`` must be SALESFORCE_ORG_ID (Salesforce's own advice: any
org can point its messages at any URL). Either wrong: 401, nothing stored.

The XML is parsed by expat with every DOCTYPE refused before its first declaration is read:
no DTD means no entity can be declared, so none can be expanded (billion laughs) or fetched
(external entities). Each Lead notification is a lead handed to sales when its owner is a
user (not a queue), taken once as ``salesforce:<18-character id>``. Each Opportunity
notification is stored as its own delivery, keyed by the
opportunity's and the notification's id (Salesforce re-delivers a notification under its id),
as JSON of its fields as sent. Processing takes the deal from the stored fields (Salesforce
sends the record's latest data; there is no API to read); a delivery older than another stored
one for the same opportunity is superseded (LastModifiedDate or SystemModstamp when the
message has one, else the later CloseDate of two closes, else the later received).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from urllib.parse import parse_qs
from xml.etree import ElementTree as ET
from xml.parsers import expat
from xml.sax.saxutils import escape

from sqlalchemy.exc import SQLAlchemyError

from bot.db import session_scope
from bot.intake.errors import Unprocessable
from bot.jobs.deals import nudge_new_deal, receive_deal
from bot.jobs.leads import nudge_new_lead, receive_lead
from bot.models import CrmSource
from bot.runtime import Runtime
from bot.services import crm_inbox, deal_input
from bot.services import winloss as wl_svc
from bot.services.crm_formats import salesforce_id18
from bot.services.deal_input import DealIn, InvalidField
from bot.services.leads import MAX_CONTEXT, LeadIn

log = logging.getLogger(__name__)

SOURCE = CrmSource.SALESFORCE.value
PATH = "/hooks/salesforce"
# 100 notifications of an opportunity's chosen fields are a few KiB each; 2 MiB leaves room
# for a few long text fields too. A longer body is refused (413) and shows in Salesforce's
# Outbound Messages queue with that error.
MAX_BODY = 2 * 1024 * 1024
MAX_NOTIFICATIONS = 100  # the WSDL's maxOccurs
MAX_DEPTH = 16  # Envelope/Body/notifications/Notification/sObject/field is 6 deep
CONTENT_TYPE = "text/xml; charset=utf-8"
KEPT_HEADERS = ("soapaction", "user-agent", "content-type")
# The objects whose notifications are taken: closed opportunities (deals) and leads assigned
# to a salesperson. Key prefixes: 00Q a Lead, 005 a User, 00G a Group (a queue).
OBJECTS = ("Opportunity", "Lead")
LEAD_PREFIX = "00Q"
USER_PREFIX = "005"

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"

ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body>'
    f'<notificationsResponse xmlns="{OUTBOUND_NS}"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body></soapenv:Envelope>\n"
).encode()


@dataclass(frozen=True)
class SoapAnswer:
    """What POST /hooks/salesforce answers: an HTTP status and a SOAP body."""

    status: int
    body: bytes
    content_type: str = CONTENT_TYPE


def fault(status: int, message: str, *, client: bool = True) -> SoapAnswer:
    """A SOAP 1.1 fault: ``Client`` (the request is wrong) or ``Server`` (try again)."""
    code = "soapenv:Client" if client else "soapenv:Server"
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{escape(message)}</faultstring>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>\n"
    )
    return SoapAnswer(status, body.encode())


# --- parsing XML safely -------------------------------------------------------------------


class UnsafeXml(ValueError):
    """The XML declares a DOCTYPE (or entities), or nests deeper than a message does."""


def parse_xml(
    data: bytes,
    *,
    max_depth: int = MAX_DEPTH,
    spans: dict[ET.Element, tuple[int, int]] | None = None,
    span_of: str = "Notification",
) -> ET.Element:
    """The element tree of ``data``; UnsafeXml for a DOCTYPE, an entity declaration or too
    deep a nesting, expat.ExpatError for XML that is not well-formed.

    expat is driven directly so the DOCTYPE is refused when its start is read, before any
    declaration inside it: nothing can be expanded or fetched. Names are ElementTree's
    ``{namespace}local``. With ``spans``, each element named ``span_of`` (its local name) is
    mapped to where it lies in ``data`` (start, end), to keep its text as sent.
    """
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    depth = 0
    starts: list[int] = []

    def refuse(*_args: object) -> None:
        raise UnsafeXml("a DOCTYPE or entity declaration is not accepted")

    def refuse_external(*_args: object) -> int:
        raise UnsafeXml("an external entity is not accepted")

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > max_depth:
            raise UnsafeXml(f"elements nested more than {max_depth} deep")
        builder.start(_clark(name), {_clark(k): v for k, v in attrs.items()})
        if spans is not None and _local(name) == span_of:
            starts.append(parser.CurrentByteIndex)

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        element = builder.end(_clark(name))
        if spans is not None and _local(name) == span_of and starts:
            closing = data.find(b">", parser.CurrentByteIndex)  # the end tag has no attributes
            spans[element] = (starts.pop(), closing + 1)

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse_external
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.Parse(data, True)
    return builder.close()


def _clark(name: str) -> str:
    return "{" + name if "}" in name else name


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _text(element: ET.Element | None) -> str | None:
    if element is None or element.get(XSI_NIL) in ("true", "1"):
        return None
    text = (element.text or "").strip()
    return text or None


# --- authenticating -----------------------------------------------------------------------


def secret_given(*, secret: str, headers: Mapping[str, str], query: str) -> bool:
    """Whether the request carries the secret: as basic auth's password (any user name), or
    as ``token`` in the query string; compared in constant time."""
    expected = secret.encode()
    offered: list[bytes] = []
    auth = headers.get("authorization", "").strip()
    if auth[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        offered.append(decoded.partition(b":")[2])
    offered.extend(t.encode() for t in parse_qs(query).get("token", [])[:1])
    ok = False
    for candidate in offered:
        ok |= hmac.compare_digest(candidate, expected)
    return ok


def same_org(given: str | None, configured: str) -> bool:
    """Whether ``given`` (the message's OrganizationId, 18 characters) is the configured org
    (15 or 18 characters: the first 15 are the case-sensitive id)."""
    if not given:
        return False
    return hmac.compare_digest(given.strip()[:15].encode(), configured[:15].encode())


# --- receiving ----------------------------------------------------------------------------


def receive(
    rt: Runtime, *, body: bytes, headers: Mapping[str, str], query: str
) -> tuple[SoapAnswer, list[int]]:
    """Authenticate and store one Outbound Message; the answer and the deliveries stored now
    (to be processed after the answer)."""
    s = rt.settings
    if not s.salesforce_configured:
        return fault(
            503,
            "Salesforce is not configured: set SALESFORCE_ORG_ID and SALESFORCE_WEBHOOK_SECRET",
            client=False,
        ), []
    assert s.salesforce_webhook_secret is not None and s.salesforce_org_id is not None
    lower = {k.lower(): v for k, v in headers.items()}
    if not secret_given(secret=s.salesforce_webhook_secret, headers=lower, query=query):
        log.warning("Salesforce outbound message: missing or wrong secret")
        return fault(401, "missing or wrong credentials"), []
    spans: dict[ET.Element, tuple[int, int]] = {}
    try:
        root = parse_xml(body, spans=spans)
    except UnsafeXml as err:
        log.warning("Salesforce outbound message refused: %s", err)
        return fault(400, f"body: {err}"), []
    except expat.ExpatError as err:
        return fault(400, f"body: malformed XML: {err}"), []
    notifications = _notifications(root)
    if notifications is None:
        return fault(400, "body: not a SOAP notifications() request"), []
    if not same_org(_text(_child(notifications, "OrganizationId")), s.salesforce_org_id):
        log.warning("Salesforce outbound message from another organization: refused")
        return fault(401, "OrganizationId is not this endpoint's organization"), []
    try:
        found, ignored = _deliveries(notifications, raw=lambda e: _as_sent(body, spans.get(e)))
    except Unprocessable as err:
        return fault(400, f"body: {err}"), []
    kept = {k: lower[k] for k in KEPT_HEADERS if k in lower}
    now = rt.now()
    stored: list[int] = []
    try:
        with session_scope(rt.session_factory) as session:
            for delivery_id, raw in found:
                pk = crm_inbox.store(
                    session, source=SOURCE, delivery_id=delivery_id, body=raw, headers=kept, now=now
                )
                if pk is not None:
                    stored.append(pk)
    except SQLAlchemyError:
        log.exception("Salesforce outbound message: the deliveries could not be stored")
        return fault(503, "could not store the message; try again", client=False), []
    if ignored:
        log.info(
            "Salesforce outbound message: %d notification(s) not on an Opportunity or Lead",
            ignored,
        )
    log.info(
        "Salesforce outbound message: %d stored, %d duplicates",
        len(stored),
        len(found) - len(stored),
    )
    return SoapAnswer(200, ACK), stored


def _notifications(root: ET.Element) -> ET.Element | None:
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        return None
    body = root.find(f"{{{SOAP_NS}}}Body")
    if body is None:
        return None
    return body.find(f"{{{OUTBOUND_NS}}}notifications")


def _as_sent(body: bytes, span: tuple[int, int] | None) -> str | None:
    """The text of one element as Salesforce sent it (UTF-8, as it always is), or None."""
    if span is None:
        return None
    try:
        text = body[span[0] : span[1]].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text  # UTF-16 read as UTF-8: not as sent


def _deliveries(
    notifications: ET.Element, *, raw: Callable[[ET.Element], str | None] = lambda _e: None
) -> tuple[list[tuple[str, str]], int]:
    """(delivery id, JSON to store) for each notification on an Opportunity or a Lead, and
    how many notifications on other objects were dropped. ``raw`` gives a notification's XML
    as sent, kept with it (without the namespace declarations of the elements around it)."""
    elements = [e for e in notifications if _local(e.tag) == "Notification"]
    if len(elements) > MAX_NOTIFICATIONS:
        raise Unprocessable(f"more than {MAX_NOTIFICATIONS} notifications")
    org = _text(_child(notifications, "OrganizationId"))
    action = _text(_child(notifications, "ActionId"))
    found: list[tuple[str, str]] = []
    ignored = 0
    for element in elements:
        notification_id = _text(_child(element, "Id"))
        record = _child(element, "sObject")
        if not notification_id or record is None:
            raise Unprocessable("each Notification needs its Id and sObject")
        kind = _local(record.get(XSI_TYPE, "").rsplit(":", 1)[-1])
        if kind and kind not in OBJECTS:
            ignored += 1
            continue
        fields = {_local(f.tag): _text(f) for f in record if len(f) == 0}
        record_id = fields.get("Id")
        if not record_id:
            raise Unprocessable(f"notification {notification_id[:20]}: the sObject has no Id")
        if not kind:  # no xsi:type: the id's key prefix says which object it is
            kind = "Lead" if record_id.startswith(LEAD_PREFIX) else "Opportunity"
        data = {
            "organization_id": org,
            "action_id": action,
            "notification_id": notification_id,
            "object": kind,
            "fields": fields,
            "xml": raw(element),
        }
        found.append((_delivery_id(record_id, notification_id), json.dumps(data)))
    return found, ignored


def _delivery_id(opportunity_id: str, notification_id: str) -> str:
    """Unique by the notification's id; led by the opportunity's, so the deliveries about
    one opportunity are found together."""
    return f"{opportunity_id[:40]}:{notification_id[:100]}"


# --- processing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Version:
    """Where a delivery stands in its opportunity's history."""

    modified: datetime | None
    close: date | None  # the CloseDate of a closed opportunity (an open one's is a forecast)
    pk: int

    def later_than(self, other: _Version) -> bool:
        """The modification times when both have one; else, both closed, the later close;
        else the one received later."""
        if self.modified and other.modified and self.modified != other.modified:
            return self.modified > other.modified
        if self.close and other.close and self.close != other.close:
            return self.close > other.close
        return self.pk > other.pk


def _version(fields: Mapping[str, str | None], pk: int) -> _Version:
    modified = None
    for name in ("SystemModstamp", "LastModifiedDate"):
        value = fields.get(name)
        if value:
            try:
                modified = datetime.fromisoformat(value)
            except ValueError:
                continue
            if modified.tzinfo is None:  # Salesforce sends UTC ("...Z"): never compare naive
                modified = modified.replace(tzinfo=UTC)
            break
    close = None
    if _boolean(fields, "IsClosed") and fields.get("CloseDate"):
        try:
            close = date.fromisoformat(str(fields["CloseDate"])[:10])
        except ValueError:
            close = None
    return _Version(modified, close, pk)


def superseded_by(rt: Runtime, *, opportunity_id: str, notification_id: str) -> str | None:
    """The delivery id of a later stored delivery about the same opportunity, or None when
    this one is the latest (failed deliveries do not count)."""
    mine_id = _delivery_id(opportunity_id, notification_id)
    prefix = _delivery_id(opportunity_id, "")
    with session_scope(rt.session_factory) as session:
        rows = crm_inbox.about_one_record(session, source=SOURCE, prefix=prefix)
    versions = {}
    for pk, delivery_id, body in rows:
        try:
            fields = json.loads(body)["fields"]
        except (ValueError, KeyError, TypeError):
            continue
        versions[delivery_id] = _version(fields, pk)
    mine = versions.pop(mine_id, None)
    if mine is None:
        return None
    for delivery_id, version in versions.items():
        if version.later_than(mine):
            return delivery_id
    return None


def process(rt: Runtime, body: str) -> str:
    """Turn one stored notification into a closed deal (or nothing); what came of it.

    Raises Unprocessable when it never can be (a field Closeloop needs is not in the message).
    """
    data = json.loads(body)
    fields: dict[str, str | None] = data.get("fields") or {}
    opportunity_id = fields.get("Id")
    notification_id = data.get("notification_id")
    if not opportunity_id or not notification_id:
        raise Unprocessable("no opportunity or notification id")
    later = superseded_by(rt, opportunity_id=opportunity_id, notification_id=notification_id)
    if data.get("object") == "Lead":
        return _process_lead(rt, opportunity_id, fields, later=later)
    if later:
        return f"opportunity {opportunity_id}: superseded by the later delivery {later}"
    closed = _boolean(fields, "IsClosed")
    if closed is None:
        raise Unprocessable(
            f"opportunity {opportunity_id}: the message has no IsClosed; add IsClosed and "
            "IsWon to the outbound message's fields"
        )
    stage = fields.get("StageName") or "?"
    if not closed:
        return f"opportunity {opportunity_id}: stage {stage!r} is not closed"
    won = _boolean(fields, "IsWon")
    if won is None:
        raise Unprocessable(
            f"opportunity {opportunity_id}: the message has no IsWon; add it to the outbound "
            "message's fields"
        )
    outcome = "won" if won else "lost"
    deal = _deal_in(rt, opportunity_id, fields, outcome=outcome)
    deal_pk, created = receive_deal(rt, deal, origin="crm")
    if created:
        nudge_new_deal(rt, deal_pk)
        return f"opportunity {opportunity_id} closed {outcome}: deal {deal_pk} received"
    with session_scope(rt.session_factory) as session:
        changed = wl_svc.refresh_crm_deal(session, deal_pk=deal_pk, deal=deal)
    return f"opportunity {opportunity_id} closed {outcome}: deal {deal_pk} " + (
        "updated to Salesforce's latest" if changed else "already received"
    )


def _process_lead(
    rt: Runtime, lead_id: str, fields: Mapping[str, str | None], *, later: str | None
) -> str:
    """A Lead notification: taken once, as ``salesforce:<18-character id>``, when its owner is
    a user (``005``); a queue (``00G``) is no salesperson yet: nothing, until the lead is
    assigned and the message sent again. A delivery older than another stored for the same
    lead (LastModifiedDate) does nothing: the later one decides."""
    if later:
        return f"lead {lead_id}: superseded by the later delivery {later}"
    owner_id = fields.get("OwnerId") or ""
    if not owner_id.startswith(USER_PREFIX):
        what = "a queue" if owner_id.startswith("00G") else "no user"
        return f"lead {lead_id}: owned by {what} ({owner_id or 'no OwnerId'}), not a salesperson"
    owner_user_id, owner_email = _owner(rt, fields)
    name = " ".join(p for p in (fields.get("FirstName"), fields.get("LastName")) if p)
    email = (fields.get("Email") or "").strip().lower() or None
    lead = LeadIn(
        external_id=f"salesforce:{salesforce_id18(lead_id)}",
        person=(name.strip() or email or f"Salesforce lead {lead_id}")[:255],
        owner_user_id=owner_user_id,
        owner_email=owner_email,
        email=email[:255] if email else None,
        company=_short(fields.get("Company")),
        title=_short(fields.get("Title")),
        source=_short(fields.get("LeadSource")),
        context=(fields.get("Description") or "").strip()[:MAX_CONTEXT] or None,
    )
    lead_pk, created = receive_lead(rt, lead, origin="crm")
    if not created:
        return f"lead {lead_id}: lead {lead_pk} already received"
    nudge_new_lead(rt, lead_pk)
    return f"lead {lead_id} assigned to {owner_id}: lead {lead_pk} received"


def _short(value: str | None) -> str | None:
    return value.strip()[:255] or None if value else None


def _boolean(fields: Mapping[str, str | None], name: str) -> bool | None:
    value = (fields.get(name) or "").strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    return None


def _owner(rt: Runtime, fields: Mapping[str, str | None]) -> tuple[str | None, str | None]:
    """(Slack user ID, email) of the opportunity's owner: the owner field on the message
    (SALESFORCE_OWNER_FIELD, the owner's email), else SALESFORCE_OWNERS by OwnerId."""
    s = rt.settings
    value = fields.get(s.salesforce_owner_field)
    if value:
        try:
            return deal_input.parse_owner(value, s.salesforce_owner_field)
        except InvalidField:
            log.warning("Salesforce: %s is not an email; trying OwnerId", s.salesforce_owner_field)
    owner_id = (fields.get("OwnerId") or "")[:15]
    mapped = dict(s.salesforce_owners).get(owner_id) if owner_id else None
    if mapped:
        return (None, mapped) if "@" in mapped else (mapped, None)
    return None, None


def _deal_in(
    rt: Runtime, opportunity_id: str, fields: Mapping[str, str | None], *, outcome: str
) -> DealIn:
    s, now = rt.settings, rt.now()
    closed_at, date_only = now, False
    if fields.get("CloseDate"):
        try:
            closed_at, date_only = deal_input.parse_closed_at(
                fields["CloseDate"], now=now, field_name="CloseDate"
            )
        except InvalidField as err:
            raise Unprocessable(f"opportunity {opportunity_id}: {err}") from None
    try:
        amount = deal_input.parse_amount(fields.get("Amount"))
    except InvalidField:
        amount = None
    won = outcome == "won"
    reason = fields.get(s.salesforce_win_reason_field if won else s.salesforce_loss_reason_field)
    owner_user_id, owner_email = _owner(rt, fields)
    return DealIn(
        external_id=f"salesforce:{salesforce_id18(opportunity_id)}",
        name=(fields.get("Name") or f"Salesforce opportunity {opportunity_id}").strip()[:255],
        outcome=outcome,
        closed_at=closed_at,
        owner_user_id=owner_user_id,
        owner_email=owner_email,
        amount=amount,
        closed_on_date_only=date_only,
        crm_reason=reason.strip()[: wl_svc.MAX_TEXT] if reason and reason.strip() else None,
    )
