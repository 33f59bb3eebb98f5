"""Events API events: answered first, processed from the database, once in effect.

An event's 200 never waits on Slack: the app's middleware stores and claims each delivery
(bot.services.inbox) and answers at once (:meth:`EventInbox.receive`); the event is then
dispatched through the Bolt app on the after-the-ack threads (:meth:`EventInbox.process`),
where its listener may read Slack, and stores what it causes (an acknowledgement, messages
in the outbox). When its listener has finished, the event is marked done, or given back
for another try (:meth:`EventInbox.finished`). The tick replays what was never finished
(:meth:`EventInbox.replay`), and forgets finished events after a week.
"""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import datetime

from slack_bolt import App, BoltRequest

from bot.db import session_scope
from bot.models import InboxState
from bot.runtime import Runtime
from bot.services import inbox as inbox_svc

log = logging.getLogger(__name__)

EVENT = "closeloop_event_id"  # in the Bolt context: the inbox event being processed
EVENT_ATTEMPT = "closeloop_event_attempt"
EVENT_ERROR = "closeloop_event_error"  # the listener failed (set by the error handler)
REPLAY_BATCH = 50  # events replayed per tick at most


class EventInbox:
    """Claims and outcomes of the events one Bolt app processes.

    ``owner`` names this app's claims in the database. It also remembers which events its
    own threads are claiming or running, so a claim of its own that it could not give back
    (the database was away when the listener failed) is taken over by Slack's next retry
    instead of waiting for its lease to run out, and a duplicate delivered to this same
    process while the first is still running is ignored.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.owner = f"{rt.instance_id}:{secrets.token_hex(4)}"[-64:]
        self.app: App | None = None  # the app that processes the events (attach)
        self._lock = threading.Lock()
        self._running: dict[str, datetime] = {}  # event_id -> when this process claimed it

    def attach(self, app: App) -> None:
        self.app = app

    def receive(self, body: dict) -> int | None:
        """Store and claim the event in ``body``; its attempt number when it is to be
        processed now, None for a duplicate (done, given up, or being processed).

        Raises when the database cannot be reached: the caller answers 500, so Slack
        delivers the event again."""
        event_id = body["event_id"]
        now = self.rt.now()
        with self._lock:
            since = self._running.get(event_id)
            if since is not None and now - since < inbox_svc.LEASE:
                return None  # another thread of this process has it
            self._running[event_id] = now
        try:
            with session_scope(self.rt.session_factory) as session:
                attempt = inbox_svc.claim(
                    session,
                    event_id=event_id,
                    payload=body,
                    owner=self.owner,
                    now=now,
                    reclaim_own=True,  # no thread of ours is on it (checked above)
                )
        except BaseException:
            self._forget(event_id)
            raise
        if attempt is None:
            self._forget(event_id)
        return attempt

    def process(self, body: dict, attempt: int) -> None:
        """Run the listener of a claimed event (on a thread after the ack, or the tick's),
        then send what it queued."""
        assert self.app is not None, "attach() the app first"
        context = {EVENT: body["event_id"], EVENT_ATTEMPT: attempt}
        try:
            # Bolt skips the signature check for Socket Mode requests: the body was
            # verified when it arrived, before it was stored.
            self.app.dispatch(BoltRequest(body=body, mode="socket_mode", context=context))
        finally:
            self.rt.send_soon()

    def finished(self, event_id: str, error: BaseException | None = None) -> None:
        """The listener for ``event_id`` returned (``error`` None) or failed: mark the event
        done, or give its claim back for a retry (given up after the last attempt)."""
        now = self.rt.now()
        try:
            with session_scope(self.rt.session_factory) as session:
                if error is None:
                    if not inbox_svc.finish(session, event_id=event_id, owner=self.owner, now=now):
                        log.warning(
                            "event %s finished after its claim ran out; another process may "
                            "have processed it as well",
                            event_id,
                        )
                    return
                released = inbox_svc.release(
                    session,
                    event_id=event_id,
                    owner=self.owner,
                    error=f"{type(error).__name__}: {error}",
                    now=now,
                )
            if released is None:
                log.warning("event %s failed after its claim ran out", event_id)
            elif released.state == InboxState.FAILED:
                log.error(
                    "event %s failed %d times; giving up on it (kept as failed for %d days)",
                    event_id,
                    released.attempts,
                    inbox_svc.KEEP.days,
                )
            else:
                log.warning(
                    "event %s failed (attempt %d of %d); the tick processes it again",
                    event_id,
                    released.attempts,
                    inbox_svc.MAX_ATTEMPTS,
                )
        except Exception:
            log.exception(
                "could not record how event %s ended; it is processed again once its claim "
                "runs out",
                event_id,
            )
        finally:
            self._forget(event_id)

    def _forget(self, event_id: str) -> None:
        with self._lock:
            self._running.pop(event_id, None)

    def replay(self) -> int:
        """The tick's step: events whose processing failed or was abandoned (a process died
        with the claim) are claimed and processed again, here, from their stored payload;
        an event out of attempts is given up, loudly. Returns how many were processed."""
        now = self.rt.now()
        with session_scope(self.rt.session_factory) as session:
            given_up = inbox_svc.give_up_abandoned(session, now=now)
            due = inbox_svc.due_for_replay(session, now=now, limit=REPLAY_BATCH)
        for gone in given_up:
            log.error(
                "event %s (%s) never finished after %d attempts; giving up on it (last error: %s)",
                gone.event_id,
                gone.event_type,
                gone.attempts,
                gone.last_error,
            )
        processed = 0
        for event in due:
            attempt = self.receive(event.payload)
            if attempt is None:
                continue
            log.info("replaying event %s (attempt %d)", event.event_id, attempt)
            try:
                self.process(event.payload, attempt)
            except Exception:
                log.exception("replaying event %s failed", event.event_id)
            processed += 1
        return processed

    def forget_old(self) -> int:
        """The tick's step: finished events received more than a week ago are forgotten."""
        with session_scope(self.rt.session_factory) as session:
            return inbox_svc.prune(session, now=self.rt.now())
