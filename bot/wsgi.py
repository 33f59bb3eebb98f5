"""Production HTTP serving: gunicorn workers, each with its own app and a scheduler role.

``closeloop run`` (HTTP mode) starts :class:`ProductionServer`. Each worker builds its own
Runtime, Bolt app and WSGI callable after the fork (no engine or client crosses a fork), and
runs a :class:`bot.leader.SchedulerRole`, so whichever worker holds the database lock runs the
scheduler and another takes over if it dies.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import tempfile
from collections.abc import Callable

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from bot import metrics
from bot.afterack import LATER_WORKERS, MODAL_WORKERS
from bot.app import create_app
from bot.config import Settings, web_concurrency, web_threads
from bot.db import make_engine, make_session_factory, normalise_url
from bot.event_inbox import EventInbox
from bot.gc_tuning import IdleCollector
from bot.runtime import Runtime
from bot.scheduler import role as scheduler_role
from bot.server import make_wsgi_app

log = logging.getLogger(__name__)


# Connections above the pool, opened for the moment and closed when returned: the worker that
# holds the scheduler role can need a few more at once (APScheduler's job store, the outbox job
# beside the tick), and a request must never wait for one.
POOL_OVERFLOW = 4


def db_pool_size(threads: int) -> int:
    """Database connections a worker keeps open: one for each of its threads that can hold
    one at the same moment (request threads, work after the ack, opening modals, the
    scheduler's tick and its lock). SQLAlchemy's default pool keeps 5 and closes any connection
    above that the moment it is returned: under load a worker opened and closed a connection for
    about one Slack request in four, a new PostgreSQL backend (~7 ms) each time, half of them
    before the ack (bench/ack_bench.py)."""
    return threads + LATER_WORKERS + MODAL_WORKERS + 2


def build_worker_app(
    settings: Settings,
    *,
    scheduler: bool,
    on_exit: Callable[[Callable[[], object]], object] = atexit.register,
) -> Callable:
    """The WSGI callable for one worker (called in the worker, after the fork). ``on_exit``
    registers what the worker must stop when it exits, last registered first (gunicorn's
    ``worker_exit`` runs them before the interpreter shuts down: see ProductionServer)."""
    rt = Runtime.build(
        settings,
        session_factory=make_session_factory(
            _worker_engine(settings.database_url, pool_size=db_pool_size(web_threads()))
        ),
    )
    events = EventInbox(rt)
    app = create_app(rt, inbox=events)
    on_exit(rt.after_ack.drain)  # registered first, so it runs after the role stops
    if scheduler:
        on_exit(scheduler_role(rt, events).stop)
    wsgi_app = make_wsgi_app(app, rt)
    # Everything built so far lives as long as the worker: out of the garbage collector's
    # sight, a full collection has far fewer objects to walk (a pause every request waits on).
    gc.collect()
    gc.freeze()
    collector = IdleCollector(rt.after_ack.foreground)  # and later collections between requests
    if collector.start():
        on_exit(collector.stop)
    return wsgi_app


def _worker_engine(url: str, *, pool_size: int) -> Engine:
    """The worker's engine, its pool holding up to ``pool_size`` connections open."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        return make_engine(url)  # one connection per thread by design; nothing to size
    return make_engine(url, pool_size=pool_size, max_overflow=POOL_OVERFLOW)


class ThroughOurLogs(GunicornLogger):
    """gunicorn's own lines go through Closeloop's handler (bot.logs): one format, JSON
    included, with secrets redacted. Requests are logged by bot.server (closeloop.access)."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers = []
            logger.propagate = True


class ProductionServer(BaseApplication):
    """gunicorn, configured from code (no config file): gthread workers on $PORT."""

    def __init__(self, settings: Settings, *, scheduler: bool) -> None:
        self._settings = settings
        self._scheduler = scheduler
        self._on_exit: list[Callable[[], object]] = []  # in the worker: what to stop
        # /metrics adds up every worker's figures: each writes them under this directory
        # (prometheus_client's multiprocess mode), set before the workers are forked.
        metrics.use_directory(
            os.environ.get(metrics.DIRECTORY) or tempfile.mkdtemp(prefix="closeloop-metrics-")
        )
        super().__init__()

    def load_config(self) -> None:
        workers, threads = web_concurrency(), web_threads()
        options = {
            "bind": f"0.0.0.0:{self._settings.port}",
            "workers": workers,
            "worker_class": "gthread",
            "threads": threads,
            "timeout": 30,
            "graceful_timeout": 20,
            "keepalive": 5,
            # Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new
            # connections evenly. On one shared socket the first worker to wake accepts them:
            # in bench/ack_bench.py one of two workers took 4 of 5 keep-alive connections and
            # answered its share of a burst of 50 one interpreter lock at a time.
            "reuse_port": True,
            "accesslog": None,  # bot.server logs each request (closeloop.access)
            "logger_class": ThroughOurLogs,
            "child_exit": lambda _arbiter, worker: metrics.process_exited(worker.pid),
            "worker_exit": self._worker_exit,
            "loglevel": (os.environ.get("LOG_LEVEL") or "info").lower(),
            "proc_name": "closeloop",
            "preload_app": False,
        }
        # gunicorn 25.1+ opens a control socket for gunicornc at one path per user
        # ($HOME/.gunicorn/gunicorn.ctl): a second Closeloop on the machine (a blue-green
        # deploy, the test suite's parallel servers) would take it over. Nothing uses it.
        if "control_socket_disable" in self.cfg.settings:
            options["control_socket_disable"] = True
        for key, value in options.items():
            self.cfg.set(key, value)
        log.info(
            "serving HTTP on port %s: %s worker processes of %s threads",
            self._settings.port,
            workers,
            threads,
        )

    def load(self) -> Callable:
        return build_worker_app(
            self._settings, scheduler=self._scheduler, on_exit=self._on_exit.append
        )

    def _worker_exit(self, _arbiter, _worker) -> None:
        """gunicorn calls this in a worker that stops (SIGTERM: after its requests were
        answered), before the interpreter shuts down: the scheduler stops while it still can
        (atexit would be too late: the interpreter refuses new threads' work by then), the
        sends under way finish and are recorded, what was claimed but not sent is given back.
        In the arbiter this list is empty."""
        stops, self._on_exit[:] = list(self._on_exit), []
        for stop in reversed(stops):
            try:
                stop()
            except Exception:
                log.exception("stopping the worker cleanly failed")
