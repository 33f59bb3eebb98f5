"""Events API events processed at least once and, by event_id, once in effect.

:class:`Inbox` is one Bolt app's side of the inbox (bot.services.inbox): the app's middleware
stores and claims each event before its listener runs (:meth:`Inbox.receive`), and the
listener's completion marks it done or gives the claim back (:meth:`Inbox.finished`). The
scheduler's tick replays what was never finished (:func:`replay_events`) through the Bolt app
again, and forgets finished events after a week (:func:`forget_old_events`).
"""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import datetime

from bot.db import session_scope
from bot.models import InboxState
from bot.runtime import Runtime
from bot.services import inbox as inbox_svc

log = logging.getLogger(__name__)

REPLAY = "closeloop_replay"  # in the Bolt context of an event replayed from the database
REPLAY_BATCH = 50  # events replayed per tick at most


class Inbox:
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
        self._lock = threading.Lock()
        self._running: dict[str, datetime] = {}  # event_id -> when this process claimed it

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
                    "event %s failed (attempt %d of %d); Slack's retry or the tick processes "
                    "it again",
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


def replay_events(rt: Runtime) -> int:
    """The tick's step: events whose processing failed or was abandoned (a process died with
    the claim) are dispatched through the Bolt app again, from their stored payload (no
    signature to check: it came from our database); an event out of attempts is given up,
    loudly. Returns how many were dispatched (their listeners finish on the app's threads).
    """
    now = rt.now()
    with session_scope(rt.session_factory) as session:
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
    if not due:
        return 0
    from slack_bolt import BoltRequest

    app = rt.bolt_app
    if app is None:  # a process without Slack listeners (`closeloop scheduler`, `tick`)
        from bot.app import create_app

        app = create_app(rt, token_verification=False)
    for event in due:
        log.info("replaying event %s", event.event_id)
        try:
            # Bolt skips the signature check for Socket Mode requests: their body was
            # verified when it arrived, as this one was before it was stored.
            app.dispatch(
                BoltRequest(body=event.payload, mode="socket_mode", context={REPLAY: True})
            )
        except Exception:
            log.exception("replaying event %s failed", event.event_id)
    return len(due)


def forget_old_events(rt: Runtime) -> int:
    """The tick's step: finished events received more than a week ago are forgotten."""
    with session_scope(rt.session_factory) as session:
        return inbox_svc.prune(session, now=rt.now())
