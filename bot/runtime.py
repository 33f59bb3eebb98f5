"""What every listener, job and command needs, built once per process: :class:`Runtime`."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta

from slack_sdk import WebClient
from sqlalchemy.orm import Session, sessionmaker

from bot.afterack import AfterAck
from bot.config import Settings
from bot.db import make_engine, make_session_factory, session_scope
from bot.delivery.kinds import register_all
from bot.delivery.outbox import Kinds, Sender
from bot.models import utcnow
from bot.services import outbox as outbox_svc
from bot.services import outgoing
from bot.slack.client import Pacer, make_client, sender_client
from bot.slack.directory import Directory


@dataclass(frozen=True)
class Runtime:
    """The wiring for one running bot (or one test); nothing in it is replaced later.

    ``client`` reads Slack and answers people (views.open, views.publish); everything
    Closeloop posts, edits or uploads goes through ``outbox``: what this process's requests
    queued is sent by it right after the ack (:meth:`send_soon`), the rest only while it
    holds the scheduler role (``outbox.resume()`` / ``outbox.stop()``).
    """

    settings: Settings
    session_factory: sessionmaker[Session]
    client: WebClient
    directory: Directory
    outbox: Sender
    after_ack: AfterAck
    clock: Callable[[], datetime]
    instance_id: str

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        client: WebClient | None = None,
        session_factory: sessionmaker[Session] | None = None,
        clock: Callable[[], datetime] | None = None,
        executor: Executor | None = None,
        paced: bool = True,
    ) -> Runtime:
        """``executor`` runs the work after the ack (tests pass one that tracks it);
        ``paced`` False sends the outbox as fast as Slack answers (tests)."""
        if session_factory is None:
            session_factory = make_session_factory(make_engine(settings.database_url))
        outbox_svc.track_commits(session_factory)
        client = client or make_client(settings)
        clock = clock or utcnow
        after_ack = AfterAck(executor=executor)
        instance_id = f"{socket.gethostname()}:{os.getpid()}"
        outbox = Sender(
            session_factory=session_factory,
            client=sender_client(client),
            kinds=register_all(Kinds(), settings),
            owner=instance_id,
            clock=clock,
            pacer=Pacer.for_rate(settings.slack_post_rate) if paced else None,
            workers=settings.outbox_workers,
            lease=timedelta(seconds=settings.outbox_lease_seconds),
            quiet=after_ack.foreground.wait_idle,
        )
        outbox.stop()  # until this process takes the scheduler role
        return cls(
            settings=settings,
            session_factory=session_factory,
            client=client,
            directory=Directory(client, settings),
            outbox=outbox,
            after_ack=after_ack,
            clock=clock,
            instance_id=instance_id,
        )

    def now(self) -> datetime:
        return self.clock()

    def tell(self, user_id: str, text: str, *, key: str | None = None) -> None:
        """DM ``user_id`` a short message of ours, through the outbox (``key``: once per key)."""
        with session_scope(self.session_factory) as session:
            outgoing.notice(session, user_id=user_id, text=text, now=self.now(), key=key)
        self.send_soon()

    def send_soon(self) -> None:
        """Send what this thread's transactions just queued, after the ack. On PostgreSQL
        this process sends just those messages itself, whether or not it holds the
        scheduler role (whose poll sends everything else). On SQLite only the process with
        the role sends, in its drain (one already under way takes them along, claiming and
        recording many messages in one transaction each), within a second for the others:
        the database takes one writer at a time, and every worker writing its sends would
        make the forms' own writes wait (bench/ack_bench.py)."""
        keys = outbox_svc.committed_keys()
        if not keys:
            return
        if self.sends_anywhere:
            self.after_ack.later(self.outbox.send_now, keys)
        elif not self.outbox.stopped:
            self.after_ack.later(self.outbox.drain)

    @property
    def sends_anywhere(self) -> bool:
        """Whether a process without the scheduler role sends what its requests queued."""
        return self.session_factory.kw["bind"].dialect.name != "sqlite"
