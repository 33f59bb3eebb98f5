"""Production HTTP serving: gunicorn workers, each with its own app and a scheduler role.

``closeloop run`` (HTTP mode) starts :class:`ProductionServer`. Each worker builds its own
Runtime, Bolt app and WSGI callable after the fork (no engine or client crosses a fork), and
runs a :class:`bot.leader.SchedulerRole`, so whichever worker holds the database lock runs the
scheduler and another takes over if it dies.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable

from gunicorn.app.base import BaseApplication

from bot.config import Settings

log = logging.getLogger(__name__)


def build_worker_app(settings: Settings, *, scheduler: bool) -> Callable:
    """The WSGI callable for one worker (called in the worker, after the fork)."""
    from concurrent.futures import ThreadPoolExecutor

    from bot.app import create_app
    from bot.runtime import Runtime
    from bot.server import make_wsgi_app

    rt = Runtime.build(settings)
    app = create_app(rt)
    background = ThreadPoolExecutor(max_workers=4, thread_name_prefix="background")
    if scheduler:
        from bot import scheduler as sched_mod

        atexit.register(sched_mod.role(rt).stop)
    return make_wsgi_app(app, rt, run_later=lambda fn: background.submit(_logged(fn)))


def _logged(fn):
    def run() -> None:
        try:
            fn()
        except Exception:
            log.exception("background task failed")

    return run


class ProductionServer(BaseApplication):
    """gunicorn, configured from code (no config file): gthread workers on $PORT."""

    def __init__(self, settings: Settings, *, scheduler: bool) -> None:
        self._settings = settings
        self._scheduler = scheduler
        super().__init__()

    def load_config(self) -> None:
        workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
        threads = int(os.environ.get("WEB_THREADS") or 8)
        options = {
            "bind": f"0.0.0.0:{self._settings.port}",
            "workers": max(1, workers),
            "worker_class": "gthread",
            "threads": max(1, threads),
            "timeout": 30,
            "graceful_timeout": 20,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": (os.environ.get("LOG_LEVEL") or "info").lower(),
            "proc_name": "closeloop",
            "preload_app": False,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable:
        return build_worker_app(self._settings, scheduler=self._scheduler)
