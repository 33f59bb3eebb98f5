"""The HTTP side: Slack at POST /slack/events (signature-verified by Bolt; HTTP mode only),
closed deals at POST /hooks/deal-closed (signed with DEALS_WEBHOOK_SECRET), GET /healthz."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot import health, metrics
from bot.listeners.crm_webhook import MAX_BODY, handle_deal_closed
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


def _read_body(environ) -> bytes | None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length < 0 or length > MAX_BODY:
        return None
    return environ["wsgi.input"].read(length) if length else b""


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
        if path == "/hooks/deal-closed":
            if method != "POST":
                return _reply(start_response, 405, b"use POST\n", "text/plain")
            body = _read_body(environ)
            if body is None:
                answer_status, answer = 413, {"ok": False, "error": "body too large"}
            else:
                headers = {
                    k[5:].replace("_", "-").lower(): v
                    for k, v in environ.items()
                    if k.startswith("HTTP_")
                }
                result = handle_deal_closed(rt, body=body, headers=headers, run_later=run_later)
                answer_status, answer = result.status, result.body
            return _reply(
                start_response, answer_status, json.dumps(answer).encode(), "application/json"
            )
        if slack is None:
            return _reply(start_response, 404, b"Not Found\n", "text/plain")
        foreground.enter()
        try:
            return slack(environ, start_response)
        finally:
            foreground.leave()

    return logged(wsgi)


_PATH_KINDS = {
    "/slack/events": "slack",
    "/hooks/deal-closed": "deal_webhook",
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


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), format % args)


def make_http_server(wsgi_app, host: str, port: int) -> ThreadingWSGIServer:
    """A threaded WSGI server (one thread per request) bound to ``host:port``."""
    return make_server(
        host, port, wsgi_app, server_class=ThreadingWSGIServer, handler_class=QuietHandler
    )
