"""What every listener and job needs: settings, storage, the Slack client, a clock."""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from sqlalchemy.orm import Session, sessionmaker

from bot.config import Audience, Settings
from bot.db import make_engine, make_session_factory
from bot.models import utcnow

if TYPE_CHECKING:
    from slack_bolt import App

log = logging.getLogger(__name__)

# What a Web API call can raise once its retries are spent: an error answer, or the network.
SLACK_ERRORS = (SlackClientError, OSError)


# Posting twice is worse than posting late: a connection that dropped after Slack took the
# message would duplicate it, so these are not retried blindly. Closeloop's own retry (the
# minute tick) first looks for the message by its metadata (see Runtime.find_marked).
NOT_IDEMPOTENT = ("chat.postMessage", "chat.postEphemeral")
THREAD_PAGES = 20  # conversations.replies pages read at most when looking for a reply


class SafeConnectionRetryHandler(ConnectionErrorRetryHandler):
    """Retries dropped connections, except for calls that would post a second message."""

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        if request.url.rstrip("/").endswith(NOT_IDEMPOTENT):
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


def make_client(settings: Settings, *, timeout: int = 10) -> WebClient:
    """A WebClient on ``SLACK_API_URL`` that honours Retry-After and retries 5xx and drops."""
    client = WebClient(
        token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=timeout
    )
    client.retry_handlers = [
        SafeConnectionRetryHandler(max_retry_count=2),
        RateLimitErrorRetryHandler(max_retry_count=5),
        ServerErrorRetryHandler(max_retry_count=3),
    ]
    return client


def fanout_client(client: WebClient) -> WebClient:
    """The same client without waiting inside a call: the outbox retries ``ratelimited``
    (after its Retry-After) and 5xx answers itself, so a sender thread never sleeps while
    other messages could go out."""
    twin = WebClient(token=client.token, base_url=client.base_url, timeout=client.timeout)
    twin.retry_handlers = [SafeConnectionRetryHandler(max_retry_count=2)]
    return twin


class Pacer:
    """A token bucket: at most ``rate`` calls a second on average, ``burst`` at once.

    Fan-out (prompts, reminders, nudges) goes through it so Closeloop paces itself to
    Slack's limits instead of hammering Slack until it answers ``ratelimited``.
    """

    def __init__(self, rate: float, burst: int = 1, clock=time.monotonic, sleep=time.sleep):
        self.rate, self.burst = rate, max(1, burst)
        self._tokens = float(self.burst)
        self._last = clock()
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()

    def refund(self) -> None:
        """Give back the token of a call Slack refused (429 or 5xx): it posted nothing."""
        with self._lock:
            self._tokens = min(float(self.burst), self._tokens + 1)

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            delay = (1 - self._tokens) / self.rate
            self._tokens = 0.0
            self._last = now + delay
        self._sleep(delay)


class Roster:
    """Reads who is in sales and in marketing, from the settings or a Slack user group."""

    def __init__(self, client: WebClient, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._lock = threading.Lock()
        self._marketing: tuple[float, frozenset[str]] | None = None

    def _members(self, audience: Audience) -> list[str]:
        if audience.usergroup is None:
            return list(audience.users)
        response = self._client.usergroups_users_list(usergroup=audience.usergroup)
        return list(response.get("users") or [])

    def sales_ids(self) -> list[str]:
        """Current sales reps (usergroups.users.list is read on every call)."""
        return self._members(self._settings.sales)

    def marketing_ids(self, *, max_age: float = 0.0) -> frozenset[str]:
        """Marketing members, read from Slack now; ``max_age`` seconds lets a recent read
        stand in (a button click must open its modal within 3 seconds, so it uses one; the
        acknowledgement itself is always checked against a fresh read)."""
        with self._lock:
            cached = self._marketing
        if cached is not None and max_age > 0 and time.monotonic() - cached[0] <= max_age:
            return cached[1]
        members = frozenset(self._members(self._settings.marketing))
        with self._lock:
            self._marketing = (time.monotonic(), members)
        return members

    def profile(self, user_id: str) -> tuple[str | None, str | None]:
        """(tz, display name) from users.info; tz None when Slack has none."""
        return _profile_of(self._client.users_info(user=user_id)["user"])

    def profiles(
        self, user_ids: Collection[str], into: dict[str, tuple[str | None, str | None]]
    ) -> None:
        """Put (tz, display name) of each of ``user_ids`` that users.list has into ``into``,
        read a page of USERS_LIST_PAGE at a time and no further than needed. What was read
        before a failure stays in ``into``; a cursor seen before, or more than
        USERS_LIST_MAX_PAGES pages, ends the reading."""
        wanted: set[str] = set(user_ids)
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(USERS_LIST_MAX_PAGES):
            page = self._client.users_list(limit=USERS_LIST_PAGE, cursor=cursor)
            for user in page.get("members") or []:
                if user.get("id") in wanted:
                    into[user["id"]] = _profile_of(user)
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor or cursor in seen or not wanted - into.keys():
                return
            seen.add(cursor)
        log.warning("users.list: stopped after %d pages", USERS_LIST_MAX_PAGES)


USERS_LIST_PAGE = 200  # Slack's advice for users.list pages
USERS_LIST_MAX_PAGES = 1000  # 200,000 people


def _profile_of(user: dict) -> tuple[str | None, str | None]:
    name = (user.get("profile") or {}).get("display_name") or user.get("real_name")
    return user.get("tz"), name or user.get("name")


class Foreground:
    """The Slack requests this process is answering now, so work that can wait yields to them.

    Slack wants each request answered within 3 seconds and a person is watching a modal
    close. What a listener does after its ack (posting to marketing's channel, updating the
    rep's DM, opening a modal) goes to :meth:`Runtime.later`, whose threads start a task once
    no request has been answered here for ``quiet`` seconds (a burst of 50 submissions
    arrives over a few milliseconds, with gaps between them), or ``patience`` seconds after
    the task was queued at the latest: a burst is acknowledged first and its follow-up work
    runs right after, instead of the acks queueing behind rounds of database and Slack calls
    for the one interpreter lock. ``patience`` is counted from the queueing, so a steady
    stream of requests delays that work by at most that much and never starves it (a
    modal's trigger_id lives 3 seconds).
    """

    def __init__(self, patience: float = 0.25, quiet: float = 0.03) -> None:
        self.patience = patience
        self.quiet = quiet
        self._answering = 0
        self._last_answer = 0.0  # time.monotonic() when the last request was answered
        self._idle = threading.Condition()

    def enter(self) -> None:
        with self._idle:
            self._answering += 1

    def leave(self) -> None:
        with self._idle:
            self._answering = max(0, self._answering - 1)
            self._last_answer = time.monotonic()
            if self._answering == 0:
                self._idle.notify_all()

    @property
    def answering(self) -> int:
        return self._answering

    def wait_idle(self, queued_at: float | None = None) -> bool:
        """Return once no request has been answered for ``quiet`` seconds (True), or
        ``patience`` seconds after ``queued_at`` (a time.monotonic(); default now; False),
        whichever is first."""
        deadline = (time.monotonic() if queued_at is None else queued_at) + self.patience
        with self._idle:
            while True:
                now = time.monotonic()
                if self._answering == 0 and now >= self._last_answer + self.quiet:
                    return True
                if now >= deadline:
                    return False
                if self._answering == 0:
                    quiet_at = self._last_answer + self.quiet
                    self._idle.wait(min(quiet_at, deadline) - now)
                else:
                    self._idle.wait(deadline - now)


class IdleCollector:
    """Garbage collections in the quiet moments between Slack requests.

    CPython collects its youngest generation after every 700 net allocations, the next after
    10 of those, and now and then everything, each on whichever thread is allocating at that
    moment: in a gunicorn worker, usually a request thread in the middle of a burst, holding
    the interpreter lock throughout while every request of the worker waits
    (bench/ack_bench.py: full collections of 35 to 52 ms, second-generation ones of 14 to
    17 ms). :meth:`start` changes that for the process (CPython 3.11 to 3.13; 3.14's
    incremental collector has no such generations, and is left alone):

    - the youngest generation is collected after ``YOUNG`` net allocations instead of 700:
      the objects of a request in flight then rarely outlive their request into the older
      generations, which is most of what those collections had to walk;
    - automatic full collections are off (their threshold out of reach);
    - a daemon thread, every ``poll`` seconds, collects what is due once ``foreground`` is
      quiet (see :class:`Foreground`): the second generation whenever the youngest was
      collected since (when the wait for quiet runs out, after its ``patience``, it collects
      anyway, as CPython would have by then), and a full collection after ``every`` of those
      (CPython's threshold), at a quiet moment only, unless none has run for
      ``FULL_AT_LEAST_EVERY`` seconds. Memory stays bounded as before: cyclic garbage is
      collected within seconds, whatever the traffic.
    """

    YOUNG = 10_000  # net allocations between collections of the youngest generation
    OFF = 1_000_000  # the full-collection threshold while this runs: out of reach
    FULL_AT_LEAST_EVERY = 60.0  # seconds: a due full collection waits for quiet this long

    def __init__(self, foreground: Foreground, *, poll: float = 0.5) -> None:
        self.foreground = foreground
        self.poll = poll
        self.every = 10  # CPython's default; start() reads the process's own
        self.collections: Counter[int] = Counter()  # by generation
        self._saved: tuple[int, int, int] | None = None
        self._last_full = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self) -> int | None:
        """The generation a collection now would be of, or None when nothing is due."""
        _, young_runs, second_runs = gc.get_count()
        if second_runs >= self.every:
            return 2
        return 1 if young_runs else None

    def collect_if_due(self) -> int | None:
        """Collect what is due, after waiting for quiet; the generation collected, if any."""
        if self.due() is None:
            return None
        quiet = self.foreground.wait_idle()
        generation = self.due()  # more may be due after the wait
        if generation == 2 and not quiet:
            if time.monotonic() - self._last_full < self.FULL_AT_LEAST_EVERY:
                generation = 1 if gc.get_count()[1] else None  # the full one when quiet
        if generation is None:
            return None
        gc.collect(generation)
        if generation == 2:
            self._last_full = time.monotonic()
        self.collections[generation] += 1
        return generation

    def start(self) -> bool:
        """Take over the older generations' collections; False where this does not apply."""
        if sys.version_info >= (3, 14):
            return False
        if self._thread is not None or gc.get_threshold()[2] >= self.OFF:
            raise RuntimeError("garbage collection is already taken over in this process")
        self._saved = gc.get_threshold()
        self.every = self._saved[2]
        gc.set_threshold(self.YOUNG, self._saved[1], self.OFF)
        self._thread = threading.Thread(target=self._run, name="idle-gc", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.collect_if_due()
            except Exception:  # never let the collector die quietly with collections off
                log.exception("idle garbage collection failed")


LATER_WORKERS = 4  # threads for work after the ack, per process
MODAL_WORKERS = 2  # and for opening the modals people are waiting for
# When a modal queued this many seconds ago is still waiting for those threads (twice what
# they wait for a burst to be answered), or this many are, the next one is opened before its
# ack instead: the process is falling behind.
MODAL_BACKLOG = 0.5
MODAL_BACKLOG_COUNT = 32


@dataclass
class Runtime:
    """The wiring for one running bot (or one test)."""

    settings: Settings
    session_factory: sessionmaker[Session]
    client: WebClient
    clock: Callable[[], datetime] = utcnow
    roster: Roster = field(init=False)
    fanout_client: WebClient = field(init=False, repr=False)
    pacer: Pacer | None = None  # chat.postMessage pacing (None: unpaced, as in tests)
    last_roster_sync: datetime | None = None
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    outbox_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    sends_outbox: bool = False  # holds the scheduler role, so sends what it queues at once
    workspace_url: str | None = None  # from auth.test, for message links
    foreground: Foreground = field(default_factory=Foreground, repr=False)
    # Where work after the ack runs; None: this runtime's own LATER_WORKERS threads.
    later_executor: Executor | None = field(default=None, repr=False)
    # Where a modal a person is waiting for gets opened; None: MODAL_WORKERS threads of its own.
    modal_executor: Executor | None = field(default=None, repr=False)
    bolt_app: App | None = field(default=None, repr=False)  # replays stored events (tick)

    def __post_init__(self) -> None:
        self.roster = Roster(self.client, self.settings)
        self.fanout_client = fanout_client(self.client)
        self._later_lock = threading.Lock()
        self._modals_waiting: dict[object, float] = {}  # opens_modal work not started: queued at

    def later(
        self,
        fn: Callable[..., object],
        /,
        *args,
        on_error: Callable[[Exception], None] | None = None,
        opens_modal: bool = False,
        **kwargs,
    ) -> Future:
        """Run ``fn(*args, **kwargs)`` on this process's after-the-ack threads, once no Slack
        request is being answered here (see :class:`Foreground`). A failure is logged and
        handed to ``on_error`` (a listener's: tell the person); it never escapes.

        ``opens_modal``: a person is waiting for a modal, whose trigger_id expires 3 seconds
        after their click or command. Such work has threads of its own, so it never queues
        behind posting and DM updates (first answers are posted at SLACK_POST_RATE, and a
        burst of them would hold every after-the-ack thread for seconds). When one queued
        MODAL_BACKLOG seconds ago is still waiting (or MODAL_BACKLOG_COUNT are), it runs
        here and now, on the request's thread, before the answer leaves: under more load
        than the process can keep up with, Slack's requests are answered more slowly
        instead of modals opening too late.

        In memory: a process killed before the task ran loses it, so only work that the
        minute tick redoes from the database (posts, DM refreshes, nudges) or that the user
        can simply repeat (opening a modal) goes here.
        """
        queued_at = time.monotonic()

        def work() -> None:
            try:
                fn(*args, **kwargs)
            except Exception as err:
                log.error("work after the ack failed (%s)", _name(fn), exc_info=err)
                if on_error is not None:
                    try:
                        on_error(err)
                    except Exception:
                        log.exception("reporting a failure after the ack failed")

        if not opens_modal:

            def run() -> None:
                self.foreground.wait_idle(queued_at)
                work()

            with self._later_lock:
                if self.later_executor is None:
                    self.later_executor = ThreadPoolExecutor(
                        max_workers=LATER_WORKERS, thread_name_prefix="after-ack"
                    )
                return self.later_executor.submit(run)

        token = object()
        with self._later_lock:
            waiting = self._modals_waiting
            backlogged = len(waiting) >= MODAL_BACKLOG_COUNT or (
                bool(waiting) and queued_at - min(waiting.values()) > MODAL_BACKLOG
            )
            if not backlogged:
                waiting[token] = queued_at
                if self.modal_executor is None:
                    self.modal_executor = ThreadPoolExecutor(
                        max_workers=MODAL_WORKERS, thread_name_prefix="open-modal"
                    )
                executor = self.modal_executor
        if backlogged:
            work()
            done: Future = Future()
            done.set_result(None)
            return done

        def run_modal() -> None:
            with self._later_lock:
                self._modals_waiting.pop(token, None)
            self.foreground.wait_idle(queued_at)
            work()

        return executor.submit(run_modal)

    def drain_later(self) -> None:
        """Finish the work queued with :meth:`later` (a graceful shutdown)."""
        with self._later_lock:
            executors = {self.modal_executor, self.later_executor} - {None}
            self.later_executor = self.modal_executor = None
        for executor in executors:
            executor.shutdown(wait=True)  # type: ignore[union-attr]

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        client: WebClient | None = None,
        session_factory: sessionmaker[Session] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> Runtime:
        if session_factory is None:
            session_factory = make_session_factory(make_engine(settings.database_url))
        return cls(
            settings=settings,
            session_factory=session_factory,
            client=client or make_client(settings),
            clock=clock or utcnow,
            # A tenth of a second's worth at once: Slack's own bucket keeps the rest of its
            # burst as slack for network jitter, so pacing at its limit rarely meets a 429.
            pacer=Pacer(settings.slack_post_rate, burst=max(1, int(settings.slack_post_rate / 10))),
        )

    def now(self) -> datetime:
        return self.clock()

    def send(self, *, fanout: bool = False, **kwargs) -> dict:
        """chat.postMessage, paced; raises the Slack or network error once retries are spent.

        ``fanout``: one try only (see :func:`fanout_client`); a refusal returns its token."""
        if self.pacer is not None:
            self.pacer.wait()
        client = self.fanout_client if fanout else self.client
        try:
            return client.chat_postMessage(**kwargs).data  # type: ignore[return-value]
        except SlackApiError as err:
            if self.pacer is not None and (err.response.status_code in (429, 500, 503)):
                self.pacer.refund()
            raise

    def post(self, **kwargs) -> dict | None:
        """chat.postMessage, paced; on failure log the traceback and return None."""
        try:
            return self.send(**kwargs)
        except SLACK_ERRORS:
            log.exception("chat.postMessage to %s failed", kwargs.get("channel"))
            return None

    def update(self, **kwargs) -> bool:
        """chat.update; on failure log the traceback and return False."""
        try:
            self.client.chat_update(**kwargs)
            return True
        except SLACK_ERRORS:
            log.exception("chat.update of %s/%s failed", kwargs.get("channel"), kwargs.get("ts"))
            return False

    def find_marked(
        self,
        *,
        channel: str,
        event_type: str,
        key: str,
        value: int,
        thread_ts: str | None = None,
    ) -> dict | None:
        """The recent message in ``channel`` that Closeloop marked with this metadata, if any.

        Used before sending again something whose first try may have reached Slack. With
        ``thread_ts`` it looks among that thread's replies (``conversations.replies``, every
        page), which ``conversations.history`` does not list. Raises the Slack error when
        the messages cannot be read (the caller then waits and retries).
        """
        if channel.startswith(("U", "W")):
            channel = self.client.conversations_open(users=channel)["channel"]["id"]
        if thread_ts is None:
            history = self.client.conversations_history(
                channel=channel, limit=200, include_all_metadata=True
            )
            messages = history.get("messages") or []
        else:
            messages = self._thread(channel, thread_ts)
        for message in messages:
            metadata = message.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") == event_type and payload.get(key) == value:
                return {**message, "channel": channel}
        return None

    def _thread(self, channel: str, thread_ts: str) -> Iterator[dict]:
        """Every message of a thread, the parent first, page by page (Slack may cap a
        page well below ``limit``: 15 for some apps)."""
        cursor = None
        for _ in range(THREAD_PAGES):
            page = self.client.conversations_replies(
                channel=channel, ts=thread_ts, limit=200, cursor=cursor, include_all_metadata=True
            )
            yield from page.get("messages") or []
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return

    def tell(self, user_id: str, text: str) -> None:
        """DM a user a short message of ours (never raises)."""
        self.post(channel=user_id, text=text)


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
