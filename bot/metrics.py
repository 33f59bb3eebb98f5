"""Prometheus metrics, served at ``GET /metrics`` (prometheus_client's text format).

- ``closeloop_slack_requests_total{kind, status}``: requests answered, by what Slack sent
  (``command``, ``view_submission``, ``block_actions``, ``event``, …) or the other endpoints
  (``deal_webhook``, ``healthz``), and the HTTP status of the answer;
- ``closeloop_slack_ack_seconds``: the time to answer a Slack request (its 3 seconds);
- ``closeloop_outbox_messages{state}`` and ``closeloop_outbox_oldest_pending_seconds``: the
  outbox's depth and how long its oldest waiting message has waited (read from the database
  at each scrape);
- ``closeloop_outbox_sends_total{result}``: messages settled: sent, retrying, failed, dropped;
- ``closeloop_scheduler_role``: 1 in the process holding the scheduler role;
- ``closeloop_database_errors_total{where}``: a request or job that found the database away.

Under gunicorn every worker is a process of its own: ``closeloop run`` gives them a directory
for prometheus_client's multiprocess mode (:func:`use_directory`, before the fork), and a
scrape answered by any worker adds up all of them.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from datetime import datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.models import OutboxMessage, OutboxState

DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Metrics:
    """This process's metrics, made on first use (after the fork, in a gunicorn worker)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "closeloop_slack_requests",
            "Requests answered, by kind and HTTP status",
            ["kind", "status"],
        )
        self.ack_seconds = Histogram(
            "closeloop_slack_ack_seconds",
            "Seconds to answer a Slack request",
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
        )
        self.sends = Counter(
            "closeloop_outbox_sends", "Outbox messages settled, by result", ["result"]
        )
        self.scheduler_role = Gauge(
            "closeloop_scheduler_role",
            "1 while this process holds the scheduler role",
            multiprocess_mode="liveall",
        )
        self.database_errors = Counter(
            "closeloop_database_errors",
            "Requests or jobs that found the database unavailable",
            ["where"],
        )


_made: _Metrics | None = None
_lock = threading.Lock()


def _metrics() -> _Metrics:
    global _made
    if _made is None:
        with _lock:
            if _made is None:
                _made = _Metrics()
    return _made


def use_directory(path: str) -> None:
    """Multiprocess mode for the processes forked from here on (gunicorn's workers): each
    writes its figures under ``path``, emptied first. Call before any metric is made."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    os.environ[DIRECTORY] = path
    values.ValueClass = values.get_value_class()


def process_exited(pid: int) -> None:
    """gunicorn's child_exit: a dead worker's live gauges stop counting."""
    if os.environ.get(DIRECTORY):
        multiprocess.mark_process_dead(pid)


# --- recording ---------------------------------------------------------------------------

_kind = threading.local()


def request_kind(kind: str) -> None:
    """What the Slack request being answered on this thread is (set by the Bolt app)."""
    _kind.value = kind


def request_answered(path_kind: str, status: str, seconds: float) -> None:
    kind = getattr(_kind, "value", None) or path_kind
    _kind.value = None
    m = _metrics()
    m.requests.labels(kind=kind, status=status).inc()
    if path_kind == "slack":
        m.ack_seconds.observe(seconds)


def sent(result: str, count: int = 1) -> None:
    if count:
        _metrics().sends.labels(result=result).inc(count)


def scheduler_role(held: bool) -> None:
    _metrics().scheduler_role.set(1 if held else 0)


def database_error(where: str) -> None:
    _metrics().database_errors.labels(where=where).inc()


# --- scraping ----------------------------------------------------------------------------


class _Outbox(Collector):
    """The outbox as it is now, read at each scrape."""

    WAITING = (OutboxState.PENDING, OutboxState.SENDING)

    def __init__(self, factory: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self.factory, self.clock = factory, clock

    def collect(self):
        try:
            counts, first = self._read()
        except Exception:  # the database is away: the rest of the scrape still answers
            database_error("metrics")
            return []
        depth = GaugeMetricFamily(
            "closeloop_outbox_messages", "Outbox messages waiting or being sent", labels=["state"]
        )
        for state in self.WAITING:
            depth.add_metric([state], counts.get(state, 0))
        age = 0.0
        if first is not None:
            now = self.clock()
            first = first if first.tzinfo else first.replace(tzinfo=now.tzinfo)
            age = max(0.0, (now - first).total_seconds())
        oldest = GaugeMetricFamily(
            "closeloop_outbox_oldest_pending_seconds",
            "How long the oldest message waiting to be sent has waited",
        )
        oldest.add_metric([], age)
        return [depth, oldest]

    def _read(self) -> tuple[dict[str, int], datetime | None]:
        with self.factory() as session:
            counts = session.execute(
                select(OutboxMessage.state, func.count())
                .where(OutboxMessage.state.in_(self.WAITING))
                .group_by(OutboxMessage.state)
            ).all()
            first = session.scalar(
                select(func.min(OutboxMessage.created_at)).where(
                    OutboxMessage.state == OutboxState.PENDING
                )
            )
        return {state: n for state, n in counts}, first


def scrape(factory: sessionmaker[Session], clock: Callable[[], datetime]) -> bytes:
    """The text ``/metrics`` answers: every worker's figures, and the outbox's."""
    _metrics()  # a process that answered nothing yet still shows every metric
    registry = CollectorRegistry()
    if os.environ.get(DIRECTORY):
        multiprocess.MultiProcessCollector(registry)
        registry.register(_Outbox(factory, clock))
        return generate_latest(registry)
    registry.register(_Outbox(factory, clock))
    return generate_latest(REGISTRY) + generate_latest(registry)
