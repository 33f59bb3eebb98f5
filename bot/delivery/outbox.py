"""Sending the outbox: the one way Closeloop posts, edits and uploads in Slack.

Whatever a listener, a job or a command wants Slack to show is stored first, in the same
transaction as the change it reports (bot.services.outbox.enqueue); :class:`Sender` then
sends it, paced, in parallel, each message once (a send whose outcome was lost is looked for
before it is made again):

- it claims a window of due messages (small enough to send well within a third of the
  claim's lease at the pacing rate), asks each one's
  :class:`Kind` to render it from the database as it is now (or to drop it, or to wait),
  and sends it on a pool of threads;
- a sender thread never starts a Slack call later than a third of its claim's lease (the
  rest is the margin for the call itself), nor after the
  sender was stopped (its process lost the scheduler role), and never sleeps: a Retry-After
  or a backoff puts the message back in the outbox with ``not_before`` set;
- a post that may have reached Slack before (a timeout, a dropped connection, a process that
  died mid-call) is first looked for in the channel's history back to its first attempt
  (bot.slack.history), by the outbox id in its metadata;
- each result is recorded only while the claim still holds the message (the fence in
  bot.services.outbox.settle), together with what the kind records about it (a prompt's
  ``sent``, a post's ``ts``) and any follow-up it enqueues, in one transaction.

The process holding the scheduler role sends everything due (:meth:`Sender.drain`, paced);
any process sends what its own request just queued (:meth:`Sender.send_now`).

A message whose op is CALL is not for Slack: its kind's ``send`` hook makes the call (a CRM
write-back), rendered at claim time like any message, claimed, retried and settled the same
way, but neither paced nor looked for before it is made again (such a call is idempotent: it
sets a record's fields to the subject's values as they are when it is rendered). The hook
raises :class:`CallFailed` to say how it failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.orm import Session, sessionmaker

from bot import metrics
from bot.db import session_scope
from bot.models import Op, OutboxState
from bot.services import outbox as outbox_svc
from bot.services.outbox import Outgoing, send_within
from bot.slack import history
from bot.slack.client import SLACK_ERRORS, Pacer

log = logging.getLogger(__name__)

MARK = "closeloop_outbox"  # message metadata event_type; payload {"outbox_id": id}

# Answers that will not change by retrying: the message is settled as failed (and recorded).
PERMANENT_ERRORS = frozenset(
    {
        "account_inactive",
        "cannot_dm_bot",
        "cant_update_message",
        "channel_not_found",
        "edit_window_closed",
        "invalid_blocks",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "is_archived",
        "message_not_found",
        "messages_tab_disabled",
        "missing_scope",  # until an admin adds the scope and reinstalls (closeloop check)
        "msg_too_long",
        "no_text",
        "not_in_channel",
        "restricted_action",
        "thread_not_found",
        "too_much_history",  # cannot tell whether it went out: given up, loudly, not resent
        "user_disabled",
        "user_not_found",
        "users_not_found",
    }
)
# Refusals an admin fixes by inviting the bot to a channel (or creating it): a channel post
# keeps trying, backing off up to MAX_BACKOFF, instead of being given up.
CHANNEL_SETUP_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived"})


@dataclass(frozen=True)
class Delivered:
    """Where a message ended up in Slack."""

    channel: str
    ts: str
    file_id: str | None = None


@dataclass(frozen=True)
class Wait:
    """A render hook's answer: not ready yet (a reply whose parent is not posted yet)."""

    seconds: float = 10.0


class CallFailed(Exception):
    """A CALL's ``send`` hook failed: ``retry_after`` (seconds, a 429's Retry-After) and a
    5xx ``status`` or none (unreachable) are retried; ``permanent`` (a 400, a 404: sending it
    again would fail again) is settled failed and given to the kind's ``refused`` hook."""

    def __init__(
        self,
        error: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.retry_after = retry_after
        self.permanent = permanent


Render = Callable[[Session, Outgoing, datetime], "Outgoing | Wait | None"]
Record = Callable[[Session, Outgoing, Delivered, datetime], None]
Failed = Callable[[Session, Outgoing, str, datetime], None]
Send = Callable[[Outgoing], Delivered]  # a CALL's own way out (no database here)


@dataclass(frozen=True)
class Kind:
    """What one kind of message needs around its send; every hook runs in the transaction
    that claims or settles the message.

    ``render``: the message to send now (fresh content, the parent's ts), ``None`` to drop it
    (no longer wanted: the rep answered), or :class:`Wait`. Without it, the stored content.
    ``sent``: record the delivery (a prompt's DM ts). ``refused``: Slack refused it for good
    (tell someone, through the outbox). ``delayed``: its first attempt failed (tell the person
    once that it is late). ``keep_trying``: refusals retried with the usual backoff instead
    of given up (the bot not in the channel yet). ``send``: for op CALL, makes the call
    (on a sender thread, outside any transaction); raises :class:`CallFailed`.
    """

    render: Render | None = None
    sent: Record | None = None
    refused: Failed | None = None
    delayed: Failed | None = None
    keep_trying: frozenset[str] = frozenset()
    send: Send | None = None


class Kinds:
    """The registry of message kinds, filled once at start-up (bot.delivery.kinds)."""

    def __init__(self) -> None:
        self._kinds: dict[str, Kind] = {}

    def add(self, name: str, kind: Kind) -> None:
        if name in self._kinds:
            raise ValueError(f"outbox kind {name!r} registered twice")
        self._kinds[name] = kind

    def __getitem__(self, name: str) -> Kind:
        return self._kinds[name]  # KeyError: a row of a kind this version does not know

    def __contains__(self, name: str) -> bool:
        return name in self._kinds


@dataclass
class Drained:
    sent: list[Outgoing] = field(default_factory=list)
    retrying: list[Outgoing] = field(default_factory=list)
    failed: list[Outgoing] = field(default_factory=list)
    dropped: list[Outgoing] = field(default_factory=list)


@dataclass(frozen=True)
class _Result:
    message: Outgoing
    delivered: Delivered | None = None
    error: str | None = None
    code: str | None = None  # Slack's error code
    maybe_sent: bool = False
    retry_after: float | None = None  # Slack asked for a retry after this many seconds
    status: int | None = None  # the HTTP status of Slack's refusal
    abandoned: bool = False  # never tried: the claim ran short, or the sender was stopped
    permanent: bool = False  # a CALL refused for good (CallFailed.permanent)


# A drain whose retries fall due within this many seconds waits for them (holding no claim)
# instead of leaving them to the next outbox poll: the tail of a fan-out stays short.
RETRY_SOON = 2.0
MAX_RENDER_FAILURES = 5  # a message whose rendering keeps failing (a bug) is given up
PRUNE_EVERY = timedelta(hours=1)  # settled messages past the retention are deleted this often
SETTLE_EVERY = 0.05  # seconds: results are recorded together that finish within this


def _wait_before_retry(r: _Result, attempts: int) -> timedelta:
    """Slack's Retry-After; a second, doubling, for a 5xx (Slack or its gateway did not
    answer: the message is looked for first if it may have been posted); else the outbox's
    backoff."""
    if r.retry_after is not None:
        return timedelta(seconds=r.retry_after)
    if r.status is not None and r.status >= 500:
        return timedelta(seconds=min(30, 2 ** max(attempts - 1, 0)))
    return outbox_svc.backoff(attempts)


def _retry_after(err: SlackApiError) -> float | None:
    if err.response.status_code != 429:
        return None
    headers = {k.lower(): v for k, v in (err.response.headers or {}).items()}
    value: Any = headers.get("retry-after")  # a str, a list of them, or None
    value = value[0] if isinstance(value, list) else value
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 1.0


class Sender:
    """Sends the outbox for one process (see the module docstring)."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        client: WebClient,
        kinds: Kinds,
        owner: str,
        clock: Callable[[], datetime],
        pacer: Pacer | None,
        workers: int,
        lease: timedelta = outbox_svc.LEASE,
        quiet: Callable[[], object] | None = None,
    ) -> None:
        """``quiet``: waits (briefly) until no Slack request is being answered in this
        process; each claim and each record of results waits for it, so the outbox's
        writes fall between a burst's requests rather than in the middle of them."""
        self.session_factory = session_factory
        self.client = client
        self.kinds = kinds
        self.owner = owner
        self.clock = clock
        self.pacer = pacer
        self.workers = workers
        self.lease = lease
        self.quiet = quiet
        self.send_within = send_within(lease)
        self._running = threading.Lock()
        self._threads: ThreadPoolExecutor | None = None
        self._again = threading.Event()
        self._stopped = threading.Event()
        self._pruned_at: datetime | None = None

    # --- control ----------------------------------------------------------------------

    def stop(self) -> None:
        """Send nothing more (this process lost the scheduler role): a drain under way
        gives back what it has not started and returns."""
        self._stopped.set()

    def resume(self) -> None:
        self._stopped.clear()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def drain(self) -> Drained:
        """Send everything due, ``workers`` at a time. A second call while one runs in this
        process returns at once; the running one looks again before it finishes (also when
        the call came just as it was finishing)."""
        drained = Drained()
        self._again.set()
        while self._again.is_set() and not self.stopped:
            if not self._running.acquire(blocking=False):
                return drained  # the running drain sees _again
            try:
                while self._again.is_set() and not self.stopped:
                    self._again.clear()
                    self._housekeeping()
                    self._drain(drained)
            finally:
                self._running.release()
        return drained

    def _housekeeping(self) -> None:
        """Drop what expired; delete settled messages past the retention (hourly)."""
        now = self.clock()
        with session_scope(self.session_factory) as session:
            outbox_svc.expire(session, now=now)
            if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
                pruned = outbox_svc.prune(session, now=now)
                self._pruned_at = now
                if pruned:
                    log.info(
                        "deleted %s settled outbox messages (kept %s days)",
                        pruned,
                        outbox_svc.RETENTION.days,
                    )

    # --- the loop ---------------------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        """The sender threads, made once (a drain runs after many acks)."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="outbox")
        return self._threads

    def _window(self) -> int:
        rate = self.pacer.rate if self.pacer is not None else 1000.0
        # In flight at once: a second of sends (enough to ride out a busy database), never
        # more than half of what the pacing lets go out before the claim's last call.
        limit = int(rate * self.send_within.total_seconds() / 2)
        return max(1, min(max(self.workers * 4, int(rate)), limit))

    def _drain(self, drained: Drained) -> None:
        window = self._window()
        inflight: dict[Future, Outgoing] = {}
        exhausted = False
        retry_at: float | None = None  # monotonic: a retry recorded here falls due soon
        pool = self._pool()
        while True:
            if not exhausted and not self.stopped and len(inflight) < window:
                batch, claimed_any = self._claim(window - len(inflight), drained)
                exhausted = not claimed_any
                deadline = time.monotonic() + self.send_within.total_seconds()
                for message in batch:
                    inflight[pool.submit(self._attempt, message, deadline)] = message
            if not inflight:
                if retry_at is None or self.stopped:
                    return
                self._stopped.wait(max(0.0, retry_at - time.monotonic()))
                retry_at, exhausted = None, False  # once: then the outbox poll's turn
                continue
            done, rest = wait(list(inflight), timeout=1.0, return_when=FIRST_COMPLETED)
            if done and rest:  # record a few at once: a write each is what the database minds
                more, _ = wait(rest, timeout=SETTLE_EVERY)
                done |= more
            results = []
            for future in done:
                message = inflight.pop(future)
                try:
                    results.append(future.result())
                except Exception as err:  # a bug, not Slack: retry later, look first
                    log.exception("sending outbox message %s crashed", message.id)
                    results.append(_Result(message, error=repr(err)[:255], maybe_sent=True))
            if results:
                soon = self._settle(results, drained)
                # Settling may have put messages back (abandoned, or due again at once) or
                # queued more (a notice, a chart): look again (a read when there is none).
                outbox_svc.committed_keys()
                exhausted = False
                if soon is not None:
                    due = time.monotonic() + soon
                    retry_at = due if retry_at is None else min(retry_at, due)

    def send_now(self, keys: list[str]) -> Drained:
        """Send the messages with these ``keys`` (what a request just queued) here and now,
        one after the other, and what their delivery queues in turn (a notice). Any process
        may: claims and their fence keep each message to one sender, and one that fails
        waits in the outbox for the process with the scheduler role."""
        drained = Drained()
        for _ in range(10):  # follow-ups of follow-ups, bounded
            if not keys:
                break
            batch, _ = self._claim(len(keys), drained, keys=keys)
            deadline = time.monotonic() + self.send_within.total_seconds()
            results = []
            for message in batch:
                try:
                    results.append(self._attempt(message, deadline, own=True))
                except Exception as err:  # a bug, not Slack: retry later, look first
                    log.exception("sending outbox message %s crashed", message.id)
                    results.append(_Result(message, error=repr(err)[:255], maybe_sent=True))
            if results:
                self._settle(results, drained)
            keys = outbox_svc.committed_keys()
        return drained

    def _claim(
        self, limit: int, drained: Drained, *, keys: list[str] | None = None
    ) -> tuple[list[Outgoing], bool]:
        """(messages to send, whether anything was claimed at all)."""
        if self.quiet is not None:
            self.quiet()
        now = self.clock()
        with session_scope(self.session_factory) as session:
            claimed = outbox_svc.claim(
                session, owner=self.owner, now=now, limit=limit, lease=self.lease, keys=keys
            )
            keep = []
            for message in claimed:
                try:
                    with session.begin_nested():
                        rendered = self._render(session, message, now)
                except Exception as err:  # a bug, or a kind this version does not know
                    log.exception(
                        "rendering outbox message %s (%s) failed", message.id, message.kind
                    )
                    if message.kind not in self.kinds or message.attempts >= MAX_RENDER_FAILURES:
                        outbox_svc.mark_final(
                            session, message, state=OutboxState.FAILED, error=repr(err)
                        )
                        drained.failed.append(message)
                        metrics.sent("failed")
                    else:
                        outbox_svc.mark_retry(
                            session,
                            message,
                            error=repr(err),
                            maybe_sent=message.look_first,
                            now=now,
                        )
                    continue
                if rendered is None:
                    outbox_svc.mark_final(session, message, state=OutboxState.DROPPED)
                    drained.dropped.append(message)
                    metrics.sent("dropped")
                elif isinstance(rendered, Wait):
                    later = now + timedelta(seconds=rendered.seconds)
                    outbox_svc.release(session, message, not_before=later)
                else:
                    keep.append(rendered)
        return keep, bool(claimed)

    def _render(self, session: Session, message: Outgoing, now: datetime) -> Outgoing | Wait | None:
        render = self.kinds[message.kind].render
        return message if render is None else render(session, message, now)

    # --- one message (on a sender thread; no database here) ---------------------------

    def _attempt(self, message: Outgoing, deadline: float, *, own: bool = False) -> _Result:
        """``own``: a message this process's request just queued (send_now), sent whether
        or not this process holds the scheduler role."""
        stopped = self.stopped and not own
        if stopped or time.monotonic() > deadline:
            return _Result(message, abandoned=True)
        if message.op is Op.CALL:
            return self._call(message)
        try:
            if message.look_first and message.op is not Op.UPDATE:
                found = self._find(message)
                if found is not None:
                    return _Result(message, delivered=found)
            if message.op is Op.POST and self.pacer is not None:
                self.pacer.wait()
            if (self.stopped and not own) or time.monotonic() > deadline:
                return _Result(message, abandoned=True)
            return _Result(message, delivered=self._send(message))
        except history.TooMuchHistory as err:
            return _Result(message, error=str(err), code="too_much_history")
        except SlackApiError as err:
            data = err.response.data
            code = data.get("error") if isinstance(data, dict) else None
            status = err.response.status_code
            if self.pacer is not None and status in (429, 500, 503):
                self.pacer.refund()
            needed = data.get("needed") if isinstance(data, dict) else None
            return _Result(
                message,
                error=f"HTTP {status} {code or ''}".strip() + (f" {needed}" if needed else ""),
                code=code,
                # Slack's own 500/503 answer means it did not post; a gateway's 502/504 may
                # hide a message that was posted.
                maybe_sent=status >= 500 and status not in (500, 503),
                retry_after=_retry_after(err),
                status=status,
            )
        except SLACK_ERRORS as err:  # dropped connection or timeout: it may have been posted
            return _Result(message, error=f"{type(err).__name__}: {err}"[:255], maybe_sent=True)

    def _call(self, message: Outgoing) -> _Result:
        """A CALL, through its kind's own ``send``: no pacing, no look before (idempotent)."""
        send = self.kinds[message.kind].send
        if send is None:
            raise RuntimeError(f"outbox kind {message.kind!r} has no send hook for op CALL")
        try:
            return _Result(message, delivered=send(message))
        except CallFailed as err:
            return _Result(
                message,
                error=err.error[:255],
                retry_after=err.retry_after,
                status=err.status,
                permanent=err.permanent,
            )

    def _find(self, message: Outgoing) -> Delivered | None:
        match: Callable[[dict], bool]
        if message.op is Op.UPLOAD:
            assert message.file is not None
            name = message.file.filename

            def match(m: dict) -> bool:
                return any(f.get("name") == name for f in m.get("files") or [])

        else:
            match = history.marked(MARK, "outbox_id", message.id)
        found = history.find(
            self.client,
            channel=message.channel,
            match=match,
            oldest=message.oldest,
            thread_ts=message.thread_ts,
        )
        if found is None:
            return None
        files = found.get("files") or []
        return Delivered(found["channel"], found["ts"], files[0].get("id") if files else None)

    def _send(self, message: Outgoing) -> Delivered:
        if message.op is Op.UPDATE:
            assert message.ts is not None  # an edit is enqueued (or rendered) with its ts
            response = self.client.chat_update(
                channel=message.channel, ts=message.ts, text=message.text, blocks=message.blocks
            )
            return Delivered(response["channel"], response["ts"])
        if message.op is Op.UPLOAD:
            assert message.file is not None
            upload = self.client.files_upload_v2(
                channel=message.channel,
                thread_ts=message.thread_ts,
                content=message.file.content,
                filename=message.file.filename,
                title=message.file.title,
                alt_txt=message.file.alt_text,
            )
            file_id = (upload.get("file") or {}).get("id") or "uploaded"
            return Delivered(message.channel, message.thread_ts or "", file_id)
        args: dict = {
            "channel": message.channel,
            "text": message.text,
            "blocks": message.blocks,
            "metadata": {"event_type": MARK, "event_payload": {"outbox_id": message.id}},
            "unfurl_links": False,
        }
        if message.thread_ts:
            args["thread_ts"] = message.thread_ts
        response = self.client.chat_postMessage(**args)
        return Delivered(response["channel"], response["ts"])

    # --- results ----------------------------------------------------------------------

    def _settle(self, results: list[_Result], drained: Drained) -> float | None:
        """Record each result; the seconds until the soonest retry recorded here, when that
        is at most RETRY_SOON."""
        if self.quiet is not None:
            self.quiet()
        now = self.clock()
        soon: float | None = None
        with session_scope(self.session_factory) as session:
            for r in results:
                try:
                    with session.begin_nested():
                        soon = self._record(session, r, drained, now, soon)
                except Exception:  # a hook's bug must not undo the other results
                    log.exception("recording outbox message %s failed", r.message.id)
        return soon

    def _record(
        self, session: Session, r: _Result, drained: Drained, now: datetime, soon: float | None
    ) -> float | None:
        """Record one result (in the settling transaction); the soonest retry so far."""
        message, kind = r.message, self.kinds[r.message.kind]
        if r.abandoned:
            outbox_svc.release(session, message, not_before=now)
        elif r.delivered is not None:
            ts = r.delivered.ts
            if not outbox_svc.mark_sent(
                session, message, channel=r.delivered.channel, ts=ts, now=now
            ):
                log.warning("outbox message %s: the claim lapsed; not recorded", message.id)
                return soon
            if kind.sent is not None:
                kind.sent(session, message, r.delivered, now)
            drained.sent.append(message)
            metrics.sent("sent")
        elif r.permanent or (r.code in PERMANENT_ERRORS and r.code not in kind.keep_trying):
            log.warning("outbox message %s refused for good: %s", message.id, r.error)
            if outbox_svc.mark_final(session, message, state=OutboxState.FAILED, error=r.error):
                drained.failed.append(message)
                metrics.sent("failed")
                if kind.refused is not None:
                    kind.refused(session, message, r.error or "", now)
        else:
            log.warning("outbox message %s not sent (%s); will retry", message.id, r.error)
            wait_for = _wait_before_retry(r, message.attempts)
            if outbox_svc.mark_retry(
                session,
                message,
                error=r.error or "unknown",
                maybe_sent=r.maybe_sent or message.look_first,
                now=now,
                retry_after=wait_for.total_seconds(),
            ):
                drained.retrying.append(message)
                metrics.sent("retrying")
                if wait_for.total_seconds() <= RETRY_SOON:
                    soon = min(soon or RETRY_SOON, wait_for.total_seconds())
                if (
                    message.attempts == 1
                    and r.status != 429  # not merely paced by Slack
                    and kind.delayed is not None
                ):
                    kind.delayed(session, message, r.error or "", now)
        return soon


def rendered(message: Outgoing, **changes) -> Outgoing:
    """``message`` with fresh content (for render hooks)."""
    return replace(message, **changes)
