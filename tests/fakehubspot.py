"""A fake of the parts of HubSpot's CRM API (v3) Closeloop reads, on 127.0.0.1, port 0.

It refuses what HubSpot refuses, with HubSpot's error bodies (their shapes are in
tests/crm_samples/hubspot/README.md, with their sources): no or a wrong bearer token -> 401
``INVALID_AUTHENTICATION``; a scope the token lacks (``scopes``) -> 403 ``MISSING_SCOPES``;
an unknown deal or owner -> 404 ``OBJECT_NOT_FOUND``; ``down`` ->
503; ``rate_limited`` requests -> 429 with Retry-After. Every call is recorded.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
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


class FakeHubSpot:
    def __init__(self, *, token: str) -> None:
        self.token = token
        self.deals: dict[str, dict] = {}
        self.owners: dict[str, dict] = {}
        self.pipelines = sample("pipelines_deals.json")
        self.calls: list[Call] = []
        self.down = False
        self.rate_limited = 0  # the next N requests are answered 429
        self.scopes = {"crm.objects.deals.read", "crm.objects.owners.read"}  # the token's
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

    def calls_to(self, prefix: str) -> list[Call]:
        return [c for c in self.calls if c.path.startswith(prefix)]

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
        status, body, headers = self._route(parts.path, parse_qs(parts.query), auth)
        with self._lock:
            self.calls.append(Call("GET", parts.path, parse_qs(parts.query), auth, status))
        return status, body, headers

    def _route(self, path, query, auth) -> tuple[int, dict, dict[str, str]]:
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
        segments = path.strip("/").split("/")
        needed = "crm.objects.owners.read" if "owners" in segments else "crm.objects.deals.read"
        if needed not in self.scopes:
            return 403, _missing_scope(needed), {}
        if path == "/crm/v3/owners":
            return 200, {"results": list(self.owners.values())[:1]}, {}
        if segments[:4] == ["crm", "v3", "objects", "deals"] and len(segments) == 5:
            deal = self.deals.get(segments[4])
            if deal is None:
                return 404, _error("OBJECT_NOT_FOUND", "Object not found."), {}
            wanted = (query.get("properties") or [""])[0].split(",")
            props = {k: v for k, v in deal["properties"].items() if k in wanted or k in _ALWAYS}
            return 200, {**deal, "properties": props}, {}
        if segments[:3] == ["crm", "v3", "owners"] and len(segments) == 4:
            owner = self.owners.get(segments[3])
            if owner is None:
                return 404, _error("OBJECT_NOT_FOUND", "Object not found."), {}
            return 200, owner, {}
        if path == "/crm/v3/pipelines/deals":
            return 200, self.pipelines, {}
        return 404, {"status": "error", "message": "Not found"}, {}


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
