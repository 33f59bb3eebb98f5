"""Logging set-up: one format for every line (Closeloop's, Bolt's, gunicorn's), as text or as
one JSON object a line (``LOG_FORMAT=json``), and no token or secret ever printed (defence in
depth). What Closeloop does is logged at INFO with ids and never message text (:func:`event`);
libraries' lines that say nothing to an operator are dropped."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import event as sqla_event
from sqlalchemy.orm import Session

_TOKEN = re.compile(r"\b(xox[a-z]-|xapp-)[A-Za-z0-9-]+")
_URL_PASSWORD = re.compile(r"(//[^:/@\s]+:)[^@\s]+@")
FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# LogRecord's own attributes; anything else on a record came from ``extra=`` (an event's ids).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

events = logging.getLogger("closeloop.events")


def event(name: str, message: str, /, **ids: object) -> None:
    """Log one thing Closeloop did, at INFO: ``message`` for people, ``ids`` as fields (in
    JSON) — ids only, never what someone wrote."""
    events.info(message, extra={"event": name, **ids})


_ON_COMMIT = "closeloop_events"  # in Session.info: events logged once the transaction commits


def event_on_commit(session: Session, name: str, message: str, /, **ids: object) -> None:
    """:func:`event`, once ``session``'s transaction has committed (never for one rolled back:
    the log says only what was stored)."""
    session.info.setdefault(_ON_COMMIT, []).append((name, message, ids))


@sqla_event.listens_for(Session, "after_commit")
def _log_committed(session: Session) -> None:
    for name, message, ids in session.info.pop(_ON_COMMIT, ()):
        event(name, message, **ids)


@sqla_event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_ON_COMMIT, None)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then blanks Slack tokens, URL passwords and the given secrets."""

    def __init__(self, fmt: str, secrets: Iterable[str | None] = ()) -> None:
        super().__init__(fmt)
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


class JsonFormatter(RedactingFormatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, an exception's
    traceback, and an event's fields."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__("%(message)s", secrets)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage(), self._secrets),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info), self._secrets)
        return json.dumps(line, ensure_ascii=False)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    text = _TOKEN.sub(lambda m: m.group(1) + "***", text)
    text = _URL_PASSWORD.sub(r"\1***@", text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class _Quiet(logging.Filter):
    """Library lines that are noise or too much: dropped, or told without the request body."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name == "bot.bolt" and "`token` will be unused" in message:
            return False  # Bolt sees SLACK_BOT_TOKEN beside our client: nothing is wrong
        if record.name == "gunicorn.error" and message.startswith("Listening at:  ("):
            return False  # each worker listens itself (reuse_port); bot.wsgi says where
        if record.name == "slack_bolt.RequestVerification" and ", body:" in message:
            record.msg, record.args = message.split(", body:", 1)[0] + ")", ()
        return True


def configure(level: str, secrets: Iterable[str | None] = (), fmt: str = "text") -> None:
    """Log to stderr at ``level`` in ``fmt`` (text or json) with secrets redacted; quiet the
    chatty libraries."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter(secrets) if fmt == "json" else RedactingFormatter(TEXT, secrets)
    )
    handler.addFilter(_Quiet())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("alembic", "apscheduler.executors", "apscheduler.scheduler", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
