"""HTTP mode: Slack at POST /slack/events (signature-verified by Bolt) and GET /healthz."""

from __future__ import annotations

import logging
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


def make_wsgi_app(app: App, session_factory: sessionmaker[Session]):
    """The WSGI callable: /healthz checks the database, everything else goes to Bolt."""
    slack = SlackRequestHandler(app, path="/slack/events")

    def wsgi(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz" and environ.get("REQUEST_METHOD") == "GET":
            try:
                with session_factory() as session:
                    session.execute(text("SELECT 1"))
                status, body = "200 OK", b"ok\n"
            except Exception:
                log.exception("health check: database unreachable")
                status, body = "503 Service Unavailable", b"database unreachable\n"
            start_response(
                status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
            )
            return [body]
        return slack(environ, start_response)

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
