"""A fake of the part of Pipedrive's API Closeloop reads (``GET /api/v1/users/{id}``,
``GET /api/v1/users/me``, ``GET /api/v1/deals``, ``GET /api/v1/persons/{id}``,
``GET /api/v1/organizations/{id}``), on 127.0.0.1, port 0.

It refuses what Pipedrive refuses, with Pipedrive's error bodies (tests/crm_samples/pipedrive/):
no or a wrong API token -> 401 ``unauthorized access``; an unknown user -> 404; ``down`` -> 503.

``GET /api/v1/deals`` answers from ``deals`` (v1-shaped, as tests/crm_samples/pipedrive/
deals_list.json): ``status`` one of open, won, lost, deleted, all_not_deleted (else 400);
``sort`` "field ASC|DESC, ..." of first-level keys (else 400); offset-paged by ``start`` and
``limit`` (at most 500), ``additional_data.pagination`` saying ``more_items_in_collection``
and ``next_start``. ``list_rate_limited_after``: after that many list pages, the next one is
answered 429 (Retry-After 1) once.
The token is taken from the ``x-api-token`` header, or from the older ``api_token`` query
parameter (Pipedrive still takes it); every call is recorded with both, so a test can check
which one Closeloop sent.

Write-back: ``PUT /api/v1/deals/{id}`` with a JSON body of field keys and values sets them on
the deal and answers it; a key that is not one of ``deal_fields`` (the account's, as
``GET /api/v1/dealFields`` lists them; :meth:`add_deal_field` adds a custom one) -> 400 (an
assumption: see crm_samples/pipedrive/README.md), an unknown deal -> 404.
:meth:`fail_writes` makes the next writes answer 429 (with Retry-After) or a 5xx;
:meth:`writes` lists the writes that succeeded, with their bodies.

Lead write-back: ``PATCH /api/v1/leads/{id}`` (Leads API, "Update a lead"; the id a UUID)
with a JSON body (``Content-Type: application/json``, else 400: the Leads endpoints take
nothing else) sets the lead's fields and answers it (``leads``, :meth:`set_lead`, shaped as
crm_samples/pipedrive/lead.json). A key that is neither a lead's own field nor a custom deal
field (leads have the deals' custom fields; a standard deal field such as ``lost_reason`` is
not a lead's) -> 400 (the same assumption as for deals); an unknown lead -> 404
(crm_samples/pipedrive/error_lead_not_found.json). :meth:`fail_writes` applies to these
writes too; :meth:`lead_writes` lists the ones that succeeded.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SAMPLES = Path(__file__).parent / "crm_samples" / "pipedrive"


def sample(name: str):
    return json.loads((SAMPLES / name).read_text())


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    token_header: str | None
    status: int
    body: dict | None = field(default=None)


class FakePipedrive:
    def __init__(self, *, token: str) -> None:
        self.token = token
        self.users: dict[str, dict] = {}
        self.persons: dict[str, dict] = {}
        self.organizations: dict[str, dict] = {}
        self.deals: dict[str, dict] = {}
        self.leads: dict[str, dict] = {}
        self.calls: list[Call] = []
        self.down = False
        self.me_id = "1234567"  # the token's own user (GET /users/me)
        self.list_rate_limited_after: int | None = None  # list pages, then one 429
        self.list_pages = 0
        self.deal_fields: list[dict] = sample("deal_fields.json")["data"]
        self._write_failures: list[tuple[int, str | None]] = []
        self._lock = threading.Lock()

    def add_deal_field(self, key: str, name: str, *, field_type: str = "text") -> None:
        """A custom deal field (its key is the 40-character hash Pipedrive made for it)."""
        self.deal_fields.append(
            {
                "id": 13000 + len(self.deal_fields),
                "key": key,
                "name": name,
                "field_type": field_type,
                "edit_flag": True,
                "active_flag": True,
            }
        )

    def set_lead(self, lead_id: str, **changes) -> dict:
        """A lead (the sample's), with ``changes``."""
        lead = copy.deepcopy(sample("lead.json")["data"])
        lead["id"] = lead_id
        lead.update(changes)
        self.leads[lead_id] = lead
        return lead

    def lead_writes(self, lead_id: str | None = None) -> list[Call]:
        """The lead writes that succeeded (of ``lead_id``), oldest first."""
        return [
            c
            for c in self.calls
            if c.method == "PATCH"
            and c.status == 200
            and (c.path == f"/api/v1/leads/{lead_id}" if lead_id else "/leads/" in c.path)
        ]

    def fail_writes(self, status: int, *, times: int = 1, retry_after: str | None = None) -> None:
        """The next ``times`` writes (deals or leads) are answered ``status`` (429 with
        Retry-After)."""
        self._write_failures += [(status, retry_after)] * times

    def writes(self, deal_id: str | None = None) -> list[Call]:
        """The deal writes that succeeded (of ``deal_id``), oldest first."""
        return [
            c
            for c in self.calls
            if c.method == "PUT"
            and c.status == 200
            and (deal_id is None or c.path == f"/api/v1/deals/{deal_id}")
        ]

    def add_user(self, user_id: str, email: str | None) -> None:
        user = sample("user.json")["data"]
        user.update(id=int(user_id), email=email)
        self.users[user_id] = user

    def set_deal(self, deal_id: str, **changes) -> dict:
        """A v1 deal (the sample's lost deal 4711, owner 42), with ``changes``; times as
        Pipedrive's v1 gives them ("YYYY-MM-DD HH:MM:SS", UTC)."""
        deal = copy.deepcopy(sample("deals_list.json")["data"][0])
        deal["id"] = int(deal_id)
        deal.update(changes)
        self.deals[deal_id] = deal
        return deal

    def set_person(self, person_id: str, **changes) -> dict:
        """A person as Pipedrive holds it (the sample's, ``changes`` over it)."""
        person = {**sample("person.json")["data"], "id": int(person_id), **changes}
        self.persons[person_id] = person
        return person

    def set_organization(self, org_id: str, **changes) -> dict:
        org = {**sample("organization.json")["data"], "id": int(org_id), **changes}
        self.organizations[org_id] = org
        return org

    def calls_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    # --- serving ---------------------------------------------------------------------------

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002
                pass

            def do_GET(self):
                status, body, headers = fake._answer(self)
                payload = json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_PUT(self):
                self.do_GET()

            def do_PATCH(self):
                self.do_GET()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, req: BaseHTTPRequestHandler) -> tuple[int, dict, dict[str, str]]:
        parts = urlsplit(req.path)
        query = parse_qs(parts.query)
        header = req.headers.get("x-api-token")
        token = header or (query.get("api_token") or [None])[0]
        sent = None
        if req.command in ("PUT", "PATCH"):
            raw = req.rfile.read(int(req.headers.get("Content-Length") or 0))
            try:
                sent = json.loads(raw or b"null")
            except ValueError:
                sent = None
            if req.command == "PATCH" and not (req.headers.get("Content-Type") or "").startswith(
                "application/json"
            ):
                sent = None  # the Leads endpoints take JSON only
        status, body, headers = self._route(parts.path, query, token, req.command, sent)
        with self._lock:
            self.calls.append(
                Call(
                    req.command,
                    parts.path,
                    query,
                    header,
                    status,
                    sent if isinstance(sent, dict) else None,
                )
            )
        return status, body, headers

    def _route(
        self,
        path: str,
        query: dict[str, list[str]],
        token: str | None,
        method: str = "GET",
        sent=None,
    ) -> tuple[int, dict, dict[str, str]]:
        if self.down:
            return 503, {"success": False, "error": "Service Unavailable", "errorCode": 503}, {}
        if token != self.token:
            return 401, sample("error_unauthorized.json"), {}
        segments = path.strip("/").split("/")
        if method == "PUT":
            if segments[:3] == ["api", "v1", "deals"] and len(segments) == 4:
                return self._write(segments[3], sent)
            return 405, {"success": False, "error": "Method not allowed", "errorCode": 405}, {}
        if method == "PATCH":
            if segments[:3] == ["api", "v1", "leads"] and len(segments) == 4:
                return self._write_lead(segments[3], sent)
            return 405, {"success": False, "error": "Method not allowed", "errorCode": 405}, {}
        if segments == ["api", "v1", "dealFields"]:
            return (
                200,
                {
                    "success": True,
                    "data": copy.deepcopy(self.deal_fields),
                    "additional_data": {
                        "pagination": {"start": 0, "limit": 500, "more_items_in_collection": False}
                    },
                },
                {},
            )
        if segments == ["api", "v1", "deals"]:
            return self._list(query)
        if segments == ["api", "v1", "users", "me"]:
            me = sample("user.json")["data"]
            me.update(id=int(self.me_id), email="admin@example.com", name="Admin Example")
            return 200, {"success": True, "data": me}, {}
        status, body = self._user(segments)
        return status, body, {}

    def _list(self, query: dict[str, list[str]]) -> tuple[int, dict, dict[str, str]]:
        one = {k: v[-1] for k, v in query.items()}
        status = one.get("status", "all_not_deleted")
        if status not in ("open", "won", "lost", "deleted", "all_not_deleted"):
            return 400, _bad(f"status: {status!r} is not one of the allowed values"), {}
        try:
            start = int(one.get("start", "0"))
            limit = min(int(one.get("limit", "100")), 500)
        except ValueError:
            return 400, _bad("start and limit must be integers"), {}
        if start < 0 or limit < 1:
            return 400, _bad("start and limit must be positive"), {}
        found = [
            d
            for d in self.deals.values()
            if d.get("status") == status
            or (status == "all_not_deleted" and d.get("status") != "deleted")
        ]
        for clause in reversed([c.strip() for c in one.get("sort", "id ASC").split(",")]):
            match = re.fullmatch(r"(\w+)(?: +(ASC|DESC))?", clause, re.IGNORECASE)
            if match is None or match.group(1) not in _sample_keys():
                return 400, _bad(f"sort: {clause!r} is not a first-level field"), {}
            key = match.group(1)
            found.sort(
                key=lambda d, k=key: (d.get(k) is not None, d.get(k) or ""),
                reverse=(match.group(2) or "ASC").upper() == "DESC",
            )
        with self._lock:
            if self.list_rate_limited_after is not None:
                if self.list_pages >= self.list_rate_limited_after:
                    self.list_rate_limited_after = None
                    body = {"success": False, "error": "Too Many Requests", "errorCode": 429}
                    return 429, body, {"Retry-After": "1"}
            self.list_pages += 1
        page = found[start : start + limit]
        more = start + limit < len(found)
        pagination: dict = {"start": start, "limit": limit, "more_items_in_collection": more}
        if more:
            pagination["next_start"] = start + limit
        return (
            200,
            {
                "success": True,
                "data": copy.deepcopy(page) or None,  # Pipedrive: null when none
                "additional_data": {"pagination": pagination},
                "related_objects": {},
            },
            {},
        )

    def _write(self, deal_id: str, sent) -> tuple[int, dict, dict[str, str]]:
        failure = self._failure()
        if failure is not None:
            return failure
        if not isinstance(sent, dict) or not sent:
            return 400, sample("error_bad_request.json"), {}
        known = {f["key"] for f in self.deal_fields}
        if any(key not in known for key in sent):
            return 400, sample("error_bad_request.json"), {}
        deal = self.deals.get(deal_id)
        if deal is None:
            return 404, sample("error_deal_not_found.json"), {}
        deal.update(sent)
        return 200, {"success": True, "data": copy.deepcopy(deal)}, {}

    def _failure(self) -> tuple[int, dict, dict[str, str]] | None:
        """The next write's answer when :meth:`fail_writes` asked for one."""
        with self._lock:
            if self._write_failures:
                status, retry_after = self._write_failures.pop(0)
                body = {"success": False, "error": "Too Many Requests", "errorCode": status}
                if status == 429:
                    return 429, body, {"Retry-After": retry_after or "1"}
                body["error"] = "Service Unavailable"
                return status, body, {}
        return None

    def _write_lead(self, lead_id: str, sent) -> tuple[int, dict, dict[str, str]]:
        failure = self._failure()
        if failure is not None:
            return failure
        if not isinstance(sent, dict) or not sent:
            return 400, sample("error_bad_request.json"), {}
        custom = {f["key"] for f in self.deal_fields if f.get("edit_flag")}
        if any(key not in custom and key not in _LEAD_FIELDS for key in sent):
            return 400, sample("error_bad_request.json"), {}
        lead = self.leads.get(lead_id)
        if lead is None:
            return 404, sample("error_lead_not_found.json"), {}
        lead.update(sent)
        return 200, {"success": True, "data": copy.deepcopy(lead)}, {}

    def _user(self, segments: list[str]) -> tuple[int, dict]:
        for name, found in (("persons", self.persons), ("organizations", self.organizations)):
            if segments[:3] == ["api", "v1", name] and len(segments) == 4:
                item = found.get(segments[3])
                if item is None:  # Pipedrive: 404 with its error body
                    what = "Person" if name == "persons" else "Organization"
                    return 404, {"success": False, "error": f"{what} not found", "errorCode": 404}
                return 200, {"success": True, "data": copy.deepcopy(item)}
        if segments[:3] == ["api", "v1", "users"] and len(segments) == 4:
            user = self.users.get(segments[3])
            if user is None:
                return 404, sample("error_user_not_found.json")
            return 200, {"success": True, "data": copy.deepcopy(user)}
        return 404, {"success": False, "error": "Unknown method .", "errorCode": 404}


def _bad(message: str) -> dict:
    return {"success": False, "error": message, "errorCode": 400}


def _sample_keys() -> set[str]:
    return set(sample("deals_list.json")["data"][0])


# What "Update a lead" takes besides the custom fields (Pipedrive API reference, Leads).
_LEAD_FIELDS = {
    "title",
    "owner_id",
    "label_ids",
    "person_id",
    "organization_id",
    "is_archived",
    "value",
    "expected_close_date",
    "visible_to",
    "was_seen",
    "channel",
    "channel_id",
}
