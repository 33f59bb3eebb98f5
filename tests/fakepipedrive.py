"""A fake of the part of Pipedrive's API Closeloop reads (``GET /api/v1/users/{id}``), on
127.0.0.1, port 0.

It refuses what Pipedrive refuses, with Pipedrive's error bodies (tests/crm_samples/pipedrive/):
no or a wrong API token -> 401 ``unauthorized access``; an unknown user -> 404; ``down`` -> 503.
The token is taken from the ``x-api-token`` header, or from the older ``api_token`` query
parameter (Pipedrive still takes it); every call is recorded with both, so a test can check
which one Closeloop sent.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass
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


class FakePipedrive:
    def __init__(self, *, token: str) -> None:
        self.token = token
        self.users: dict[str, dict] = {}
        self.calls: list[Call] = []
        self.down = False
        self._lock = threading.Lock()

    def add_user(self, user_id: str, email: str | None) -> None:
        user = sample("user.json")["data"]
        user.update(id=int(user_id), email=email)
        self.users[user_id] = user

    # --- serving ---------------------------------------------------------------------------

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002
                pass

            def do_GET(self):
                status, body = fake._answer(self)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, req: BaseHTTPRequestHandler) -> tuple[int, dict]:
        parts = urlsplit(req.path)
        query = parse_qs(parts.query)
        header = req.headers.get("x-api-token")
        status, body = self._route(parts.path, header or (query.get("api_token") or [None])[0])
        with self._lock:
            self.calls.append(Call("GET", parts.path, query, header, status))
        return status, body

    def _route(self, path: str, token: str | None) -> tuple[int, dict]:
        if self.down:
            return 503, {"success": False, "error": "Service Unavailable", "errorCode": 503}
        if token != self.token:
            return 401, sample("error_unauthorized.json")
        segments = path.strip("/").split("/")
        if segments[:3] == ["api", "v1", "users"] and len(segments) == 4:
            user = self.users.get(segments[3])
            if user is None:
                return 404, sample("error_user_not_found.json")
            return 200, {"success": True, "data": copy.deepcopy(user)}
        return 404, {"success": False, "error": "Unknown method .", "errorCode": 404}
