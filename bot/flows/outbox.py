"""Sending the outbox: prompts, reminders and nudges, paced, in parallel, each exactly once.

Only the process holding the scheduler role drains the outbox (its jobs, or a CLI command
that took the role), so when a process takes the role every claim left by a dead process
can be released at once (:func:`recover`). Each message is sent with metadata naming its
outbox id; a message that may have reached Slack before (a crash, a dropped connection, a
timeout) is first looked for in the channel's history and only sent if it is not there.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime

from slack_sdk.errors import SlackApiError
from sqlalchemy.orm import Session

from bot.db import session_scope
from bot.models import OutboxState
from bot.runtime import SLACK_ERRORS, Runtime
from bot.services import outbox as outbox_svc
from bot.services.outbox import LEASE, Outgoing

log = logging.getLogger(__name__)

MARK = "closeloop_outbox"  # message metadata event_type; payload {"outbox_id": id}

# Answers that will not change by retrying: the message is settled as failed (and recorded).
PERMANENT_ERRORS = frozenset(
    {
        "account_inactive",
        "cannot_dm_bot",
        "channel_not_found",
        "invalid_blocks",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "is_archived",
        "messages_tab_disabled",
        "msg_too_long",
        "no_text",
        "not_in_channel",
        "restricted_action",
        "user_disabled",
        "user_not_found",
        "users_not_found",
    }
)


@dataclass(frozen=True)
class Kind:
    """What a kind of message needs around its send.

    ``wanted``: checked when claimed; False drops it unsent (the rep answered meanwhile).
    ``sent``: records the delivery in the same transaction that settles the message.
    ``after``: Slack-side follow-up once that is committed. ``gave_up``: Slack refused it.
    """

    wanted: Callable[[Session, Outgoing, datetime], bool] | None = None
    sent: Callable[[Session, Outgoing, str, str, datetime], None] | None = None
    after: Callable[[Runtime, Outgoing], None] | None = None
    gave_up: Callable[[Runtime, Outgoing, str], None] | None = None


KINDS: dict[str, Kind] = {}


def register(name: str, kind: Kind) -> None:
    KINDS[name] = kind


@dataclass
class Drained:
    sent: list[Outgoing] = field(default_factory=list)
    retrying: list[Outgoing] = field(default_factory=list)
    failed: list[Outgoing] = field(default_factory=list)
    dropped: list[Outgoing] = field(default_factory=list)


@dataclass(frozen=True)
class _Result:
    message: Outgoing
    response: dict | None = None
    error: str | None = None
    maybe_sent: bool = False
    final: bool = False
    retry_after: float | None = None  # Slack asked for a retry after this many seconds
    status: int | None = None  # the HTTP status of Slack's refusal


# A refused send is retried by the drain itself, without a database round trip, a few times:
# after Slack's Retry-After for ``ratelimited``, after a short backoff for a 500 or 503.
LOCAL_RETRIES = {429: 5, 500: 3, 503: 3}
MAX_LOCAL_WAIT = 60.0  # a longer Retry-After goes back to the database instead


def _retry_after(err: SlackApiError) -> float | None:
    status = err.response.status_code
    if status == 429:
        headers = {k.lower(): v for k, v in (err.response.headers or {}).items()}
        value = headers.get("retry-after")
        value = value[0] if isinstance(value, list) else value
        try:
            return max(0.0, float(value))
        except (TypeError, ValueError):
            return 1.0
    if status in (500, 503):
        return 0.25
    return None


def recover(rt: Runtime) -> int:
    """Release the claims a dead scheduler left (call only when holding the scheduler role)."""
    with session_scope(rt.session_factory) as session:
        released = outbox_svc.recover(session, now=rt.now())
    if released:
        log.info("took back %d outbox messages a previous process had claimed", released)
    return released


def _attempt(rt: Runtime, message: Outgoing) -> _Result:
    """Send one message (runs on a sender thread; no database here)."""
    if message.look_first:
        try:
            found = rt.find_marked(
                channel=message.channel, event_type=MARK, key="outbox_id", value=message.id
            )
        except SLACK_ERRORS as err:
            return _Result(message, error=f"history check failed: {err}"[:255], maybe_sent=True)
        if found is not None:
            return _Result(message, response=found)
    metadata = {"event_type": MARK, "event_payload": {"outbox_id": message.id}}
    try:
        response = rt.send(
            fanout=True,
            channel=message.channel,
            text=message.text,
            blocks=message.blocks,
            metadata=metadata,
            unfurl_links=False,
        )
    except SlackApiError as err:
        code = err.response.get("error") if isinstance(err.response.data, dict) else None
        status = err.response.status_code
        return _Result(
            message,
            error=f"HTTP {status} {code or ''}".strip(),
            # Slack's own 500/503 answer means it did not post; a gateway's 502/504 may hide
            # a message that was posted.
            maybe_sent=status >= 500 and status not in (500, 503),
            final=code in PERMANENT_ERRORS,
            retry_after=_retry_after(err),
            status=status,
        )
    except SLACK_ERRORS as err:  # dropped connection or timeout: it may have been posted
        return _Result(message, error=f"{type(err).__name__}: {err}"[:255], maybe_sent=True)
    return _Result(message, response=response)


def _claim(rt: Runtime, limit: int, result: Drained) -> tuple[list[Outgoing], bool]:
    """(messages to send, whether anything was claimed at all)."""
    now = rt.now()
    with session_scope(rt.session_factory) as session:
        claimed = outbox_svc.claim(session, owner=rt.instance_id, now=now, limit=limit)
        keep = []
        for message in claimed:
            kind = KINDS.get(message.kind, Kind())
            if kind.wanted is None or kind.wanted(session, message, now):
                keep.append(message)
            else:
                outbox_svc.mark_final(session, message_id=message.id, state=OutboxState.DROPPED)
                result.dropped.append(message)
    return keep, bool(claimed)


def _settle(rt: Runtime, results: list[_Result], drained: Drained) -> None:
    now = rt.now()
    follow_ups: list[Callable[[], None]] = []
    with session_scope(rt.session_factory) as session:
        for r in results:
            message, kind = r.message, KINDS.get(r.message.kind, Kind())
            if r.response is not None:
                channel, ts = r.response["channel"], r.response["ts"]
                row = outbox_svc.mark_sent(
                    session, message_id=message.id, channel=channel, ts=ts, now=now
                )
                if row is None:
                    continue
                if kind.sent is not None:
                    kind.sent(session, message, channel, ts, now)
                drained.sent.append(message)
                if kind.after is not None:
                    follow_ups.append(lambda k=kind, m=message: k.after(rt, m))
            elif r.final:
                log.warning("Slack refused outbox message %s for good: %s", message.id, r.error)
                outbox_svc.mark_final(
                    session, message_id=message.id, state=OutboxState.FAILED, error=r.error
                )
                drained.failed.append(message)
                if kind.gave_up is not None:
                    follow_ups.append(lambda k=kind, m=message, e=r.error: k.gave_up(rt, m, e))
            else:
                log.warning("outbox message %s not sent (%s); will retry", message.id, r.error)
                outbox_svc.mark_retry(
                    session,
                    message_id=message.id,
                    error=r.error or "unknown",
                    maybe_sent=r.maybe_sent,
                    now=now,
                )
                drained.retrying.append(message)
    for follow_up in follow_ups:
        try:
            follow_up()
        except Exception:
            log.exception("follow-up after an outbox message failed")


def drain(rt: Runtime) -> Drained:
    """Send everything due in the outbox, ``OUTBOX_WORKERS`` at a time, paced by the runtime.

    Claims are kept small enough to be sent well inside their lease at SLACK_POST_RATE, and
    results are settled in small transactions as they arrive. A message Slack refuses with
    ``ratelimited`` (or a 500/503) waits its Retry-After (or a short backoff) in memory while
    the other senders go on, then is tried again; after a few refusals it goes back to the
    database with a longer backoff. A second call while one runs in this process returns at
    once (the running one picks up what was added).
    """
    import bot.flows.winloss  # noqa: F401  (registers the win/loss kinds)

    drained = Drained()
    lock = rt.outbox_lock
    if not lock.acquire(blocking=False):
        return drained
    try:
        with session_scope(rt.session_factory) as session:
            outbox_svc.expire(session, now=rt.now())
        _drain(rt, drained)
    finally:
        lock.release()
    return drained


def _drain(rt: Runtime, drained: Drained) -> None:
    workers = rt.settings.outbox_workers
    rate = rt.pacer.rate if rt.pacer is not None else 1000.0
    # In flight at once: a second of sends (enough to ride out a busy database), never more
    # than a quarter of the lease can send.
    window = max(1, min(max(workers * 4, int(rate)), int(rate * LEASE.total_seconds() / 4)))
    inflight: dict[Future, Outgoing] = {}
    later: list[tuple[float, int, Outgoing]] = []  # (due on the monotonic clock, id, message)
    tries: dict[int, int] = {}
    exhausted = False
    with ThreadPoolExecutor(workers, thread_name_prefix="outbox") as pool:
        while True:
            now = time.monotonic()
            while later and later[0][0] <= now:
                message = heapq.heappop(later)[2]
                inflight[pool.submit(_attempt, rt, message)] = message
            if not exhausted and len(inflight) + len(later) < window:
                batch, claimed_any = _claim(rt, window - len(inflight) - len(later), drained)
                exhausted = not claimed_any
                for message in batch:
                    inflight[pool.submit(_attempt, rt, message)] = message
            if not inflight and not later:
                if exhausted:
                    return
                continue
            timeout = min(1.0, max(0.0, later[0][0] - now)) if later else 1.0
            if not inflight:
                time.sleep(timeout)
                continue
            done, _ = wait(list(inflight), timeout=timeout, return_when=FIRST_COMPLETED)
            results = []
            for future in done:
                message = inflight.pop(future)
                try:
                    result = future.result()
                except Exception as err:  # a bug, not Slack: retry later, look first
                    log.exception("sending outbox message %s crashed", message.id)
                    result = _Result(message, error=repr(err)[:255], maybe_sent=True)
                status, n = result.status, tries.get(message.id, 0)
                if (
                    result.retry_after is not None
                    and status is not None
                    and n < LOCAL_RETRIES.get(status, 0)
                    and result.retry_after <= MAX_LOCAL_WAIT
                ):
                    tries[message.id] = n + 1
                    delay = result.retry_after * (2**n if status != 429 else 1)
                    heapq.heappush(later, (time.monotonic() + delay, message.id, message))
                    continue
                results.append(result)
            if results:
                _settle(rt, results, drained)
