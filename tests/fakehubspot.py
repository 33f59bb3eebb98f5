"""A fake of the parts of HubSpot's CRM API (v3) Closeloop reads, on 127.0.0.1, port 0.

It refuses what HubSpot refuses, with HubSpot's error bodies (their shapes are in
tests/crm_samples/hubspot/README.md, with their sources): no or a wrong bearer token -> 401
``INVALID_AUTHENTICATION``; a scope the token lacks (``scopes``) -> 403 ``MISSING_SCOPES``;
an unknown deal, contact or owner -> 404 ``OBJECT_NOT_FOUND``; ``down`` ->
503; ``rate_limited`` requests -> 429 with Retry-After. Every call is recorded.

``POST /crm/v3/objects/deals/search`` (CRM search API) answers from ``deals``: filterGroups
ORed, their filters ANDed (EQ, NEQ, GT, GTE, LT, LTE, IN, NOT_IN, HAS_PROPERTY); dates
compared as instants (epoch milliseconds or ISO 8601); sorted by ``sorts``; paged by
``after`` (an offset), ``limit`` at most 100 (the v3 documented limit), at most 10,000
results a query. A malformed body, an unknown operator or property, a limit over 100 or a
cursor past 10,000 -> 400 ``VALIDATION_ERROR``. ``search_rate_limited_after``: after that
many search pages, the next one is answered 429 (Retry-After 1) once.

Write-back: ``PATCH /crm/v3/objects/deals/{id}`` with ``{"properties": {...}}`` (scope
crm.objects.deals.write) sets the deal's properties and answers the deal; a property not in
``properties`` (the portal's deal properties; :meth:`add_property` adds a custom one) -> 400
``VALIDATION_ERROR`` (PROPERTY_DOESNT_EXIST, as crm_samples/hubspot/
error_property_doesnt_exist.json), a value that is not a string or longer than 65,536
characters -> 400, an unknown deal -> 404. :meth:`fail_writes` makes the next writes answer
429 (with Retry-After) or a 5xx. ``GET /crm/v3/properties/deals/{name}`` (scope
crm.schemas.deals.read) answers a property's definition, or 404. :meth:`writes` lists the
PATCH calls that succeeded, with their bodies.

Lead write-back: ``PATCH /crm/v3/objects/contacts/{id}`` (scope crm.objects.contacts.write)
likewise sets a contact's properties (``contacts``, :meth:`set_contact`); a property not in
``contact_properties`` (the default ones, hs_lead_status as
crm_samples/hubspot/property_contact_lead_status.json) -> 400 PROPERTY_DOESNT_EXIST; a value
that is not one of an enumeration's options -> 400 ``INVALID_OPTION``
(crm_samples/hubspot/error_invalid_option.json); an unknown contact -> 404.
:meth:`fail_writes` applies to these writes too. ``GET /crm/v3/properties/contacts/{name}``
(scope crm.schemas.contacts.read) answers a contact property's definition, or 404;
:meth:`contact_writes` lists the contact writes that succeeded.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SAMPLES = Path(__file__).parent / "crm_samples" / "hubspot"


def sample(name: str):
    return json.loads((SAMPLES / name).read_text())


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    status: int
    body: dict | None = field(default=None)


class FakeHubSpot:
    def __init__(self, *, token: str) -> None:
        self.token = token
        self.deals: dict[str, dict] = {}
        self.contacts: dict[str, dict] = {}
        self.owners: dict[str, dict] = {}
        self.pipelines = sample("pipelines_deals.json")
        self.calls: list[Call] = []
        self.down = False
        self.rate_limited = 0  # the next N requests are answered 429
        self.scopes = {  # the token's
            "crm.objects.deals.read",
            "crm.objects.owners.read",
            "crm.objects.deals.write",
            "crm.schemas.deals.read",
            "crm.objects.contacts.read",
            "crm.objects.contacts.write",
            "crm.schemas.contacts.read",
        }
        # The portal's deal properties (internal name -> definition): the sample deal's.
        self.properties: dict[str, dict] = {
            name: {**sample("property_deal.json"), "name": name, "label": name}
            for name in {*sample("deal.json")["properties"], "hs_is_closed"}
        }
        self.contacts: dict[str, dict] = {}
        # The portal's contact properties: the sample contact's, hs_lead_status a dropdown.
        self.contact_properties: dict[str, dict] = {
            name: {**sample("property_deal.json"), "name": name, "label": name, "type": "string"}
            for name in sample("contact.json")["properties"]
        }
        self.contact_properties["hs_lead_status"] = sample("property_contact_lead_status.json")
        self._write_failures: list[tuple[int, str | None]] = []
        self.search_rate_limited_after: int | None = None  # search pages, then one 429
        self.search_pages = 0
        self._lock = threading.Lock()

    # --- the data --------------------------------------------------------------------------

    def add_owner(self, owner_id: str, email: str) -> None:
        owner = sample("owner.json")
        owner.update(id=owner_id, email=email)
        self.owners[owner_id] = owner

    def set_deal(self, deal_id: str, **properties: str | None) -> None:
        """The deal as HubSpot holds it now (properties merged into the sample's)."""
        deal = self.deals.get(deal_id) or sample("deal.json")
        deal["id"] = deal_id
        deal["properties"] = {**deal["properties"], "hs_object_id": deal_id, **properties}
        self.deals[deal_id] = deal

    def add_property(self, name: str, *, field_type: str = "textarea") -> None:
        """A custom deal property (as an admin creates one under Settings > Properties)."""
        self.properties[name] = {
            **sample("property_deal.json"),
            "name": name,
            "fieldType": field_type,
        }

    def set_contact(self, contact_id: str, **properties: str | None) -> None:
        """The contact as HubSpot holds it now (properties merged into the sample's)."""
        contact = self.contacts.get(contact_id) or sample("contact.json")
        contact["id"] = contact_id
        contact["properties"] = {
            **contact["properties"],
            "hs_object_id": contact_id,
            **properties,
        }
        self.contacts[contact_id] = contact

    def add_contact_property(
        self, name: str, *, field_type: str = "text", options: list[str] | None = None
    ) -> None:
        """A custom contact property (a dropdown when ``options`` are given)."""
        self.contact_properties[name] = {
            **sample("property_deal.json"),
            "name": name,
            "label": name,
            "type": "enumeration" if options else "string",
            "fieldType": "select" if options else field_type,
            "options": [{"label": o, "value": o, "hidden": False} for o in options or []],
        }

    def contact_writes(self, contact_id: str | None = None) -> list[Call]:
        """The contact writes that succeeded (of ``contact_id``), oldest first."""
        return [
            c
            for c in self.calls
            if c.method == "PATCH"
            and c.status == 200
            and c.path.startswith("/crm/v3/objects/contacts/")
            and (contact_id is None or c.path == f"/crm/v3/objects/contacts/{contact_id}")
        ]

    def fail_writes(self, status: int, *, times: int = 1, retry_after: str | None = None) -> None:
        """The next ``times`` writes (deals or contacts) are answered ``status`` (429 with
        Retry-After)."""
        self._write_failures += [(status, retry_after)] * times

    def writes(self, deal_id: str | None = None) -> list[Call]:
        """The deal writes that succeeded (of ``deal_id``), oldest first."""
        return [
            c
            for c in self.calls
            if c.method == "PATCH"
            and c.status == 200
            and (deal_id is None or c.path == f"/crm/v3/objects/deals/{deal_id}")
        ]

    def calls_to(self, prefix: str) -> list[Call]:
        return [c for c in self.calls if c.path.startswith(prefix)]

    # --- serving ---------------------------------------------------------------------------

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002
                pass

            def do_POST(self):
                self.do_GET()

            def do_PATCH(self):
                self.do_GET()

            def do_GET(self):
                status, body, headers = fake._answer(self)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, req: BaseHTTPRequestHandler) -> tuple[int, dict, dict[str, str]]:
        parts = urlsplit(req.path)
        auth = req.headers.get("Authorization")
        sent = None
        if req.command in ("POST", "PATCH"):
            raw = req.rfile.read(int(req.headers.get("Content-Length") or 0))
            try:
                sent = json.loads(raw or b"null")
            except ValueError:
                sent = raw.decode("utf-8", "replace")
        status, body, headers = self._route(parts.path, parse_qs(parts.query), auth, req, sent)
        with self._lock:
            self.calls.append(
                Call(
                    req.command,
                    parts.path,
                    parse_qs(parts.query),
                    auth,
                    status,
                    sent if isinstance(sent, dict) else None,
                )
            )
        return status, body, headers

    def _route(self, path, query, auth, req, sent) -> tuple[int, dict, dict[str, str]]:
        segments = path.strip("/").split("/")
        is_object = segments[:3] == ["crm", "v3", "objects"] and len(segments) == 5
        is_object = is_object and segments[3] in ("deals", "contacts")
        if req.command == "POST" and path != "/crm/v3/objects/deals/search":
            return 405, {"status": "error", "message": "Method Not Allowed"}, {}
        if req.command == "PATCH" and (not is_object or segments[4] == "search"):
            return 405, {"status": "error", "message": "Method Not Allowed"}, {}
        if self.down:
            return 503, {"status": "error", "message": "Service Unavailable"}, {}
        with self._lock:
            if self.rate_limited > 0:
                self.rate_limited -= 1
                return (
                    429,
                    _error("RATE_LIMIT", "You have reached your secondly limit."),
                    {"Retry-After": "1"},
                )
        if auth != f"Bearer {self.token}":
            return 401, _error("INVALID_AUTHENTICATION", _AUTH_MESSAGE), {}
        needed = "crm.objects.deals.read"
        if "owners" in segments:
            needed = "crm.objects.owners.read"
        elif "contacts" in segments:
            needed = "crm.objects.contacts.read"
        if req.command == "PATCH":
            needed = f"crm.objects.{segments[3]}.write"
        elif segments[:3] == ["crm", "v3", "properties"] and len(segments) > 3:
            needed = f"crm.schemas.{segments[3]}.read"
        if needed not in self.scopes:
            return 403, _missing_scope(needed), {}
        if req.command == "PATCH" and segments[3] == "contacts":
            return self._write(self.contacts, self.contact_properties, segments[4], sent)
        if req.command == "PATCH":
            return self._write(self.deals, self.properties, segments[4], sent)
        if segments[:3] == ["crm", "v3", "properties"] and len(segments) == 5:
            known = {"deals": self.properties, "contacts": self.contact_properties}
            found = known.get(segments[3], {}).get(segments[4])
            if found is None:
                return 404, sample("error_property_not_found.json"), {}
            return 200, found, {}
        if path == "/crm/v3/objects/deals/search":
            if req.command != "POST":
                return 405, {"status": "error", "message": "Method Not Allowed"}, {}
            with self._lock:
                if self.search_rate_limited_after is not None:
                    if self.search_pages >= self.search_rate_limited_after:
                        self.search_rate_limited_after = None
                        return (
                            429,
                            _error("RATE_LIMIT", "You have reached your secondly limit."),
                            {"Retry-After": "1"},
                        )
                self.search_pages += 1
            return self._search(sent)
        if path == "/crm/v3/owners":
            return 200, {"results": list(self.owners.values())[:1]}, {}
        if segments[:4] == ["crm", "v3", "objects", "deals"] and len(segments) == 5:
            deal = self.deals.get(segments[4])
            if deal is None:
                return 404, _error("OBJECT_NOT_FOUND", "Object not found."), {}
            wanted = (query.get("properties") or [""])[0].split(",")
            props = {k: v for k, v in deal["properties"].items() if k in wanted or k in _ALWAYS}
            return 200, {**deal, "properties": props}, {}
        if path == "/crm/v3/objects/contacts":
            return 200, {"results": list(self.contacts.values())[:1]}, {}
        if segments[:4] == ["crm", "v3", "objects", "contacts"] and len(segments) == 5:
            contact = self.contacts.get(segments[4])
            if contact is None:
                return 404, _error("OBJECT_NOT_FOUND", "Object not found."), {}
            wanted = (query.get("properties") or [""])[0].split(",")
            props = {k: v for k, v in contact["properties"].items() if k in wanted or k in _ALWAYS}
            return 200, {**contact, "properties": props}, {}
        if segments[:3] == ["crm", "v3", "owners"] and len(segments) == 4:
            owner = self.owners.get(segments[3])
            if owner is None:
                return 404, _error("OBJECT_NOT_FOUND", "Object not found."), {}
            return 200, owner, {}
        if path == "/crm/v3/pipelines/deals":
            return 200, self.pipelines, {}
        return 404, {"status": "error", "message": "Not found"}, {}

    def _write(
        self, records: dict[str, dict], known: dict[str, dict], record_id: str, sent
    ) -> tuple[int, dict, dict[str, str]]:
        with self._lock:
            if self._write_failures:
                status, retry_after = self._write_failures.pop(0)
                if status == 429:
                    body = _error("RATE_LIMIT", "You have reached your secondly limit.")
                    return 429, body, {"Retry-After": retry_after or "1"}
                return status, {"status": "error", "message": "Service Unavailable"}, {}
        props = sent.get("properties") if isinstance(sent, dict) else None
        if not isinstance(props, dict) or not props:
            return 400, _error("VALIDATION_ERROR", "No properties found to update."), {}
        unknown = [name for name in props if name not in known]
        if unknown:
            return 400, _property_doesnt_exist(unknown), {}
        for name, value in props.items():
            options = [o["value"] for o in known[name].get("options") or []]
            if options and value not in ("", *options):  # "" clears a dropdown
                return 400, _invalid_option(name, str(value), options), {}
        for name, value in props.items():
            if not isinstance(value, str) or len(value) > 65_536:
                return (
                    400,
                    _error("VALIDATION_ERROR", f"Property values were not valid: {name}"),
                    {},
                )
        record = records.get(record_id)
        if record is None:
            return 404, _error("OBJECT_NOT_FOUND", "Object not found."), {}
        record["properties"].update(props)
        return 200, record, {}

    def _search(self, sent) -> tuple[int, dict, dict[str, str]]:
        try:
            groups, limit, after, sorts, wanted = _search_request(sent)
        except ValueError as err:
            return 400, _error("VALIDATION_ERROR", str(err)), {}
        deals = [
            d
            for d in self.deals.values()
            if not groups or any(all(_matches(d, f) for f in g) for g in groups)
        ]
        for sort in reversed(sorts):
            name = sort.get("propertyName")
            deals.sort(
                key=lambda d, n=name: _sort_key(d["properties"].get(n)),
                reverse=sort.get("direction") == "DESCENDING",
            )
        page = deals[after : after + limit]
        results = [
            {
                **d,
                "properties": {
                    k: v for k, v in d["properties"].items() if k in wanted or k in _ALWAYS
                },
            }
            for d in page
        ]
        body: dict = {"total": len(deals), "results": results}
        if after + limit < len(deals):
            body["paging"] = {"next": {"after": str(after + limit), "link": "?after="}}
        return 200, body, {}


_OPERATORS = ("EQ", "NEQ", "GT", "GTE", "LT", "LTE", "IN", "NOT_IN", "HAS_PROPERTY")
_SEARCHABLE = {*sample("deal.json")["properties"], "hs_is_closed", "hs_is_closed_won"}


def _search_request(sent) -> tuple[list[list[dict]], int, int, list[dict], set[str]]:
    if not isinstance(sent, dict):
        raise ValueError("Invalid input JSON on line 1: the request body must be an object")
    groups = sent.get("filterGroups", [])
    if not isinstance(groups, list) or len(groups) > 5:
        raise ValueError("filterGroups must be a list of at most 5 groups")
    filters: list[list[dict]] = []
    for group in groups:
        found = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(found, list) or not found or len(found) > 6:
            raise ValueError("each filter group needs 1 to 6 filters")
        for f in found:
            if not isinstance(f, dict) or f.get("operator") not in _OPERATORS:
                raise ValueError(f"Invalid filter operator: {f!r}")
            if f.get("propertyName") not in _SEARCHABLE:
                raise ValueError(f"Invalid property name: {f.get('propertyName')!r}")
            if f["operator"] in ("IN", "NOT_IN"):
                if not isinstance(f.get("values"), list) or not f["values"]:
                    raise ValueError(f"{f['operator']} needs a list of values")
            elif f["operator"] != "HAS_PROPERTY" and not isinstance(f.get("value"), str):
                raise ValueError(f"{f['operator']} needs a value (a string)")
        filters.append(found)
    limit = sent.get("limit", 10)
    if not isinstance(limit, int) or not 1 <= limit <= 100:
        raise ValueError(f"limit must be 1 to 100, not {limit!r}")
    after_text = sent.get("after", "0")
    if not isinstance(after_text, str) or not after_text.isdigit():
        raise ValueError(f"after must be a paging cursor, not {after_text!r}")
    after = int(after_text)
    if after + limit > 10_000:
        raise ValueError("the search returns at most 10,000 results")
    sorts = sent.get("sorts", [])
    if not isinstance(sorts, list) or not all(isinstance(s, dict) for s in sorts):
        raise ValueError("sorts must be a list of objects")
    wanted = sent.get("properties") or ["dealname", "amount", "closedate", "pipeline"]
    return filters, limit, after, sorts, set(wanted)


def _instant(value) -> float | None:
    text = str(value)
    if text.isdigit():
        return int(text) / 1000
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _sort_key(value) -> tuple[int, float | str]:
    if value is None:
        return (1, "")
    instant = _instant(value)
    return (0, instant) if instant is not None else (0, str(value))


def _matches(deal: dict, f: dict) -> bool:
    value = deal["properties"].get(f["propertyName"])
    op = f["operator"]
    if op == "HAS_PROPERTY":
        return value not in (None, "")
    if op in ("IN", "NOT_IN"):
        inside = value is not None and str(value) in [str(v) for v in f["values"]]
        return inside if op == "IN" else not inside
    if value is None:
        return op == "NEQ"
    if op in ("EQ", "NEQ"):
        return (str(value) == f["value"]) == (op == "EQ")
    mine, theirs = _instant(value), _instant(f["value"])
    if mine is None or theirs is None:
        try:
            mine, theirs = float(value), float(f["value"])
        except ValueError:
            return False
    return {"GT": mine > theirs, "GTE": mine >= theirs, "LT": mine < theirs}.get(op, mine <= theirs)


# HubSpot always returns these with the properties asked for.
_ALWAYS = ("createdate", "hs_lastmodifieddate", "hs_object_id")
_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def _error(category: str, message: str) -> dict:
    return {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }


def _missing_scope(scope: str) -> dict:
    return {
        **_error(
            "MISSING_SCOPES",
            "This app hasn't been granted all required scopes to make this call. Read more "
            "about required scopes here: https://developers.hubspot.com/scopes.",
        ),
        "errors": [
            {
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": [scope]},
            }
        ],
        "links": {"scopes": "https://developers.hubspot.com/scopes"},
    }


def _property_doesnt_exist(names: list[str]) -> dict:
    body = sample("error_property_doesnt_exist.json")
    problems = [
        {
            "isValid": False,
            "message": f'Property "{name}" does not exist',
            "error": "PROPERTY_DOESNT_EXIST",
            "name": name,
            "localizedErrorMessage": f'Property "{name}" does not exist',
        }
        for name in names
    ]
    body["message"] = "Property values were not valid: " + json.dumps(problems)
    body["correlationId"] = str(uuid.uuid4())
    return body


def _invalid_option(name: str, value: str, options: list[str]) -> dict:
    body = sample("error_invalid_option.json")
    message = f"{value} was not one of the allowed options: [{', '.join(options)}]"
    problem = {
        "isValid": False,
        "message": message,
        "error": "INVALID_OPTION",
        "name": name,
        "localizedErrorMessage": message,
    }
    body["message"] = "Property values were not valid: " + json.dumps([problem])
    body["correlationId"] = str(uuid.uuid4())
    return body
