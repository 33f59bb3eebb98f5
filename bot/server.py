"""The HTTP side: Slack at POST /slack/events (signature-verified by Bolt; HTTP mode only),
closed deals at POST /hooks/deal-closed and leads at POST /hooks/lead (both signed with
DEALS_WEBHOOK_SECRET), and from HubSpot
at POST /hooks/hubspot (signed with HUBSPOT_CLIENT_SECRET) and Salesforce's Outbound Messages
at POST /hooks/salesforce (SALESFORCE_WEBHOOK_SECRET and SALESFORCE_ORG_ID) and from Pipedrive
at POST /hooks/pipedrive (HTTP basic auth), GET /healthz."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from sqlalchemy.exc import SQLAlchemyError

from bot import health, metrics
from bot.intake import deliveries, hubspot, pipedrive, salesforce
from bot.listeners import lead_webhook
from bot.listeners.crm_webhook import MAX_BODY, Answer, handle_deal_closed, too_large
from bot.runtime import Runtime

log = logging.getLogger(__name__)
access = logging.getLogger("closeloop.access")

_STATUS = {
    200: "200 OK",
    201: "201 Created",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Payload Too Large",
    503: "503 Service Unavailable",
}


def _reply(start_response, status: int, body: bytes, content_type: str) -> list[bytes]:
    start_response(
        _STATUS.get(status, f"{status} Error"),
        [("Content-Type", content_type), ("Content-Length", str(len(body)))],
    )
    return [body]


# Slack's requests are small: a message's text is cut at 40,000 characters, and a modal holds
# at most 100 blocks whose text inputs take at most 3,000 characters each, so the largest
# view_submission is a few hundred KiB even URL-encoded. 1 MiB leaves room, and anything
# longer is refused before it is read: Bolt reads the whole body into memory (one string, then
# its decoded copy), so an unsigned 300 MB POST grew a worker from 117 to 719 MiB.
SLACK_MAX_BODY = 1024 * 1024
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")
_READ_BLOCK = 64 * 1024


class BodyTooLarge(Exception):
    """The body is longer than its cap; ``prefix`` holds what was read (cap + 1 bytes)."""

    def __init__(self, prefix: bytes) -> None:
        super().__init__("body too large")
        self.prefix = prefix


class MalformedBody(Exception):
    """A Content-Length or chunked framing no client should send."""


def read_body(environ, *, cap: int) -> bytes:
    """The request body, reading at most ``cap`` + 1 bytes of it (BodyTooLarge beyond that).

    With a Content-Length, or chunked without one: gunicorn (production, bot.wsgi) decodes
    the chunks itself and says so with ``wsgi.input_terminated`` (its input then ends where
    the body does); wsgiref (the dev server and the tests) hands over the raw chunked framing,
    decoded here.
    """
    stream = environ["wsgi.input"]
    chunked = "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
    if chunked and not environ.get("wsgi.input_terminated"):
        return _dechunk(stream, cap=cap)
    length_text = (environ.get("CONTENT_LENGTH") or "").strip()
    if length_text:
        if not length_text.isdigit():
            raise MalformedBody(f"Content-Length {length_text[:20]!r}")
        wanted = min(int(length_text), cap + 1)
    elif chunked:  # dechunked by the server: its input ends with the body
        wanted = cap + 1
    else:
        return b""
    body = _read_up_to(stream, wanted)
    if len(body) > cap:
        raise BodyTooLarge(body)
    return body


def _read_up_to(stream, size: int) -> bytes:
    """Up to ``size`` bytes from ``stream`` (fewer only at its end)."""
    parts, left = [], size
    while left > 0:
        part = stream.read(min(left, _READ_BLOCK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _dechunk(stream, *, cap: int) -> bytes:
    """A chunked body (RFC 9112 section 7.1) read from the raw input, at most ``cap`` + 1
    bytes of it; extensions and trailers are read past."""
    body = bytearray()
    while True:
        line = stream.readline(1024)
        size_text = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not _CHUNK_SIZE.fullmatch(size_text):
            raise MalformedBody("chunk size line")
        size = int(size_text, 16)
        if size == 0:
            break
        wanted = min(size, cap + 1 - len(body))
        data = _read_up_to(stream, wanted)
        body += data
        if len(body) > cap:
            raise BodyTooLarge(bytes(body))
        if len(data) < size or stream.readline(3) not in (b"\r\n", b"\n"):
            raise MalformedBody("chunk shorter than its size")
    for _ in range(64):  # trailer fields, up to the empty line
        line = stream.readline(8192)
        if line in (b"", b"\r\n", b"\n"):
            return bytes(body)
    raise MalformedBody("too many trailer fields")


def request_headers(environ) -> dict[str, str]:
    """The request's headers, lower-case names (``x-hubspot-signature``). WSGI keeps
    Content-Type out of the HTTP_ variables: it is put back."""
    headers = {
        k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = str(environ["CONTENT_TYPE"])
    return headers


def make_wsgi_app(
    app: App | None,
    rt: Runtime,
    *,
    run_later: Callable[[Callable[[], None]], object] | None = None,
):
    """The WSGI callable. ``app`` None (Socket Mode) serves only the webhook and /healthz.

    ``run_later`` runs the deal webhook's nudge after its answer (default: the after-ack
    threads). While a Slack request is being answered, work after other acks waits.
    """
    slack = SlackRequestHandler(app, path="/slack/events") if app is not None else None
    run_later = run_later or rt.after_ack.later
    foreground = rt.after_ack.foreground

    def wsgi(environ, start_response):
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        if path == "/healthz" and method == "GET":
            # 503 within 2 s when a write could not start now (locked, silent, away)
            if health.database_writable(rt.session_factory.kw["bind"]):
                return _reply(start_response, 200, b"ok\n", "text/plain")
            return _reply(start_response, 503, b"database unavailable\n", "text/plain")
        if path == "/metrics" and method == "GET":
            return _reply(
                start_response,
                200,
                metrics.scrape(rt.session_factory, rt.clock),
                metrics.CONTENT_TYPE,
            )
        hook = hooks.get(path or "")
        if hook is not None:
            try:
                return hook(environ, start_response)
            except SQLAlchemyError:  # nothing was stored: the sender tries again
                log.exception("%s: the database could not store the delivery", path)
                body = {"ok": False, "error": "the database is unavailable; try again"}
                return _reply(start_response, 503, json.dumps(body).encode(), "application/json")
        if slack is None:
            return _reply(start_response, 404, b"Not Found\n", "text/plain")
        if path == "/slack/events":
            try:  # read here, within its cap, before Bolt reads or parses anything
                body = read_body(environ, cap=SLACK_MAX_BODY)
            except BodyTooLarge:
                return _reply(start_response, 413, b"body too large\n", "text/plain")
            except MalformedBody as err:
                return _reply(start_response, 400, f"{err}\n".encode(), "text/plain")
            environ = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        foreground.enter()
        try:
            return slack(environ, start_response)
        finally:
            foreground.leave()

    def _signed_hook(environ, start_response, handle):
        """POST /hooks/deal-closed and /hooks/lead: JSON signed with DEALS_WEBHOOK_SECRET,
        read within MAX_BODY (chunked too), answered in JSON."""
        if environ.get("REQUEST_METHOD") != "POST":
            return _reply(start_response, 405, b"use POST\n", "text/plain")
        try:
            body = read_body(environ, cap=MAX_BODY)
        except BodyTooLarge as err:
            result = too_large(err.prefix)
        except MalformedBody as err:
            result = Answer(400, {"ok": False, "error": f"body: {err}", "field": "body"})
        else:
            headers = request_headers(environ)
            result = handle(rt, body=body, headers=headers, run_later=run_later)
        return _reply(
            start_response, result.status, json.dumps(result.body).encode(), "application/json"
        )

    def _hubspot(environ, start_response):
        """Verify and store first, answer, then process what was stored (after the answer;
        the tick processes whatever this process does not get to)."""
        method = environ.get("REQUEST_METHOD") or ""
        if method != "POST":
            return _reply(start_response, 405, b"use POST\n", "text/plain")
        try:
            body = read_body(environ, cap=hubspot.MAX_BODY)
        except BodyTooLarge:
            limit = f"body too large (at most {hubspot.MAX_BODY} bytes)"
            answer_status, answer = 413, {"ok": False, "error": limit}
        except MalformedBody as err:
            answer_status, answer = 400, {"ok": False, "error": f"body: {err}"}
        else:
            headers = request_headers(environ)
            uri = hubspot.request_uri(environ, configured=rt.settings.hubspot_webhook_url)
            result, stored = hubspot.receive(rt, method=method, uri=uri, body=body, headers=headers)
            answer_status, answer = result.status, result.body
            if stored:
                run_later(lambda: deliveries.process(rt, stored))
        return _reply(
            start_response, answer_status, json.dumps(answer).encode(), "application/json"
        )

    def _salesforce(environ, start_response):
        """Authenticate and store first, answer the SOAP Ack, then process what was stored
        (after the answer; the tick processes whatever this process does not get to)."""
        if environ.get("REQUEST_METHOD") != "POST":
            return _reply(start_response, 405, b"use POST\n", "text/plain")
        try:
            body = read_body(environ, cap=salesforce.MAX_BODY)
        except BodyTooLarge:
            result = salesforce.fault(413, f"body too large (at most {salesforce.MAX_BODY} bytes)")
        except MalformedBody as err:
            result = salesforce.fault(400, f"body: {err}")
        else:
            headers = request_headers(environ)
            query = str(environ.get("QUERY_STRING") or "")
            result, stored = salesforce.receive(rt, body=body, headers=headers, query=query)
            if stored:
                run_later(lambda: deliveries.process(rt, stored))
        return _reply(start_response, result.status, result.body, result.content_type)

    def _pipedrive(environ, start_response):
        """Authenticate and store first, answer, then process what was stored (as for
        HubSpot); a 401 challenges for basic auth."""
        if environ.get("REQUEST_METHOD") != "POST":
            return _reply(start_response, 405, b"use POST\n", "text/plain")
        try:
            body = read_body(environ, cap=pipedrive.MAX_BODY)
        except BodyTooLarge:
            limit = f"body too large (at most {pipedrive.MAX_BODY} bytes)"
            answer_status, answer = 413, {"ok": False, "error": limit}
        except MalformedBody as err:
            answer_status, answer = 400, {"ok": False, "error": f"body: {err}"}
        else:
            headers = request_headers(environ)
            result, stored = pipedrive.receive(rt, body=body, headers=headers)
            answer_status, answer = result.status, result.body
            if stored:
                run_later(lambda: deliveries.process(rt, stored))
        payload = json.dumps(answer).encode()
        start_response(
            _STATUS.get(answer_status, f"{answer_status} Error"),
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                *([("WWW-Authenticate", pipedrive.REALM)] if answer_status == 401 else []),
            ],
        )
        return [payload]

    # Each CRM hook (and the generic ones): a database that cannot store the delivery is a
    # 503 for all of them (the sender retries), never a 500.
    hooks = {
        "/hooks/deal-closed": lambda e, r: _signed_hook(e, r, handle_deal_closed),
        lead_webhook.PATH: lambda e, r: _signed_hook(e, r, lead_webhook.handle_lead),
        hubspot.PATH: _hubspot,
        salesforce.PATH: _salesforce,
        pipedrive.PATH: _pipedrive,
    }
    return logged(wsgi)


_PATH_KINDS = {
    "/slack/events": "slack",
    "/hooks/deal-closed": "deal_webhook",
    "/hooks/lead": "lead_webhook",
    "/hooks/hubspot": "hubspot_webhook",
    "/hooks/salesforce": "salesforce_webhook",
    "/hooks/pipedrive": "pipedrive_webhook",
    "/healthz": "healthz",
    "/metrics": "metrics",
}


def logged(app):
    """``app`` with one line a request at INFO (closeloop.access): method, path without its
    query string, status, milliseconds to the answer."""

    def wsgi(environ, start_response):
        started = time.perf_counter()
        status = []

        def start(code, headers, exc_info=None):
            status.append(code.split(" ", 1)[0])
            return start_response(code, headers, exc_info)

        try:
            return app(environ, start)
        finally:
            seconds = time.perf_counter() - started
            method, path = environ.get("REQUEST_METHOD", "-"), environ.get("PATH_INFO", "-")
            code = status[-1] if status else "-"
            metrics.request_answered(_PATH_KINDS.get(path, "other"), code, seconds)
            if access.isEnabledFor(logging.INFO):
                ms = round(seconds * 1000, 1)
                access.info(
                    "%s %s %s %.1f ms",
                    method,
                    path,
                    code,
                    ms,
                    extra={"method": method, "path": path, "status": code, "duration_ms": ms},
                )

    return wsgi


_TOKEN = re.compile(r"([?&]token=)[^&\s\"]*")


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        line = _TOKEN.sub(r"\1***", format % args)  # the request line: no ?token= secret
        log.debug("%s - %s", self.address_string(), line)


def make_http_server(wsgi_app, host: str, port: int) -> ThreadingWSGIServer:
    """A threaded WSGI server (one thread per request) bound to ``host:port``."""
    return make_server(
        host, port, wsgi_app, server_class=ThreadingWSGIServer, handler_class=QuietHandler
    )
