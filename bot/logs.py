"""Logging set-up: one format, and no token or secret ever printed (defence in depth)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_TOKEN = re.compile(r"\b(xox[a-z]-|xapp-)[A-Za-z0-9-]+")
_URL_PASSWORD = re.compile(r"(//[^:/@\s]+:)[^@\s]+@")


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then blanks Slack tokens, URL passwords and the given secrets."""

    def __init__(self, fmt: str, secrets: Iterable[str | None] = ()) -> None:
        super().__init__(fmt)
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    text = _TOKEN.sub(lambda m: m.group(1) + "***", text)
    text = _URL_PASSWORD.sub(r"\1***@", text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def configure(level: str, secrets: Iterable[str | None] = ()) -> None:
    """Log to stderr at ``level`` with secrets redacted; quiet the chatty libraries."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("alembic", "apscheduler.executors", "apscheduler.scheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
