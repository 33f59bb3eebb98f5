"""Drive the real app the way Slack does: signed HTTP requests to /slack/events.

Payloads are built from the real samples in tests/slack_samples/ (copied from
../shared/slack-reference/samples, see its SOURCES.md), changed only where a test needs to.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bot.app import create_app
from bot.event_inbox import EventInbox
from bot.jobs.tick import Tick
from bot.runtime import Runtime
from bot.server import make_http_server, make_wsgi_app
from bot.slack.client import make_client
from tests.conftest import SIGNING_SECRET

SAMPLES = Path(__file__).parent / "slack_samples"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


def sign(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Reply:
    status: int
    body: str

    def json(self) -> dict:
        return json.loads(self.body) if self.body else {}


class TrackingExecutor(ThreadPoolExecutor):
    """Knows when every listener (including work after its ack) has finished."""

    def __init__(self) -> None:
        super().__init__(max_workers=8, thread_name_prefix="test-listener")
        self._pending = 0
        self._idle = threading.Condition()

    def submit(self, fn, /, *args, **kwargs):
        with self._idle:
            self._pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def settle(self, timeout: float = 10.0) -> None:
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0, timeout=timeout):
                raise AssertionError(f"listeners still running after {timeout:.0f}s")


_EVENTS: dict[int, EventInbox] = {}  # id(runtime) -> the event inbox its ticks replay
_TICKS: dict[int, Tick] = {}  # id(runtime) -> its process's tick (it keeps the roster's age)


def events_of(rt: Runtime) -> EventInbox:
    """The event inbox (with its Bolt app) of ``rt``'s process, made on first use."""
    events = _EVENTS.get(id(rt))
    if events is None or events.rt is not rt:
        events = EventInbox(rt)
        create_app(rt, inbox=events, token_verification=False)
        _EVENTS[id(rt)] = events
    return events


def tick_of(rt: Runtime) -> Tick:
    found = _TICKS.get(id(rt))
    if found is None or found.rt is not rt:
        found = _TICKS[id(rt)] = Tick(rt, events_of(rt))
    return found


def tick(rt: Runtime) -> None:
    """One run of the scheduler's minute tick in ``rt``'s process (it sends the outbox when
    that process does)."""
    tick_of(rt)()


def october_digest_posted(h: Harness) -> None:
    """Record October's digest as posted, so a tick in November queues no digest (a test
    about one message then sees that message alone)."""
    from datetime import date

    from bot.db import session_scope
    from bot.models import Digest

    with session_scope(h.rt.session_factory) as s:
        s.add(Digest(month=date(2026, 10, 1), channel="CDIGEST", ts="1.000001", chart_file_id="F0"))


class Harness:
    """The app served on 127.0.0.1 (port 0) against the fake Slack, with a fake clock."""

    def __init__(self, *, settings, slack, session_factory, clock) -> None:
        self.settings = settings
        self.slack = slack
        self.clock = clock
        self.session_factory = session_factory
        self.executor = TrackingExecutor()
        self.rt = self.another_process()
        self.events = EventInbox(self.rt)
        self.app = create_app(self.rt, inbox=self.events)
        _EVENTS[id(self.rt)] = self.events
        self._event_seq = 0

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.server = make_http_server(
            make_wsgi_app(self.app, self.rt, run_later=self.run_later), "127.0.0.1", 0
        )
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        # let listeners still running after their ack finish before tables are wiped
        self.executor.shutdown(wait=True)

    def another_process(self, *, sends: bool = True) -> Runtime:
        """A runtime on the same database and Slack: a restarted or parallel process. It sends
        the outbox (as a process holding the scheduler role would) unless ``sends`` is False;
        its work after the ack runs on the tracked executor."""
        rt = Runtime.build(
            self.settings,
            client=make_client(self.settings, timeout=3),
            session_factory=self.session_factory,
            clock=self.clock,
            executor=self.executor,
            paced=False,
        )
        if sends:
            rt.outbox.resume()
        return rt

    def tick(self, rt: Runtime | None = None) -> None:
        tick(rt or self.rt)

    def tick_together(self, count: int = 3, timeout: float = 60) -> None:
        """``count`` processes run the scheduler's tick at the same instant."""
        runtimes = [self.another_process() for _ in range(count)]
        barrier = threading.Barrier(count)

        def run(rt: Runtime) -> None:
            barrier.wait()
            tick(rt)

        threads = [threading.Thread(target=run, args=(rt,)) for rt in runtimes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout)

    def run_later(self, fn) -> None:
        """Background work (the deal webhook's nudge) on the tracked executor."""
        self.executor.submit(fn)

    def settle(self) -> None:
        """Wait until every listener, including its work after ack(), has finished."""
        self.executor.settle()

    # --- raw HTTP -------------------------------------------------------------------------

    def request(
        self,
        path: str,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        method: str = "POST",
        headers: dict[str, str] | None = None,
        signed: bool = True,
        timestamp: int | None = None,
        secret: str = SIGNING_SECRET,
        settle: bool = True,
    ) -> Reply:
        all_headers = {"Content-Type": content_type}
        if signed:
            ts = int(time.time()) if timestamp is None else timestamp
            all_headers["X-Slack-Request-Timestamp"] = str(ts)
            all_headers["X-Slack-Signature"] = sign(body, ts, secret)
        all_headers.update(headers or {})
        req = urllib.request.Request(
            self.url + path,
            data=body if method == "POST" else None,
            headers=all_headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                reply = Reply(resp.status, resp.read().decode())
        except urllib.error.HTTPError as err:
            reply = Reply(err.code, err.read().decode())
        if settle:
            self.settle()
        return reply

    def deal_closed(
        self,
        payload: dict | bytes,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
        signed: bool = True,
    ) -> Reply:
        """POST /hooks/deal-closed as the CRM would, signed with DEALS_WEBHOOK_SECRET."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if signed:
            ts = int(self.clock().timestamp()) if timestamp is None else timestamp
            headers["X-Closeloop-Request-Timestamp"] = str(ts)
            headers["X-Closeloop-Signature"] = signature or sign(
                body, ts, secret or self.settings.deals_webhook_secret or ""
            )
        return self.request("/hooks/deal-closed", body, headers=headers, signed=False)

    def interactive(self, payload: dict, *, settle: bool = True) -> Reply:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return self.request(
            "/slack/events",
            body,
            content_type="application/x-www-form-urlencoded",
            settle=settle,
        )

    # --- what Slack sends -----------------------------------------------------------------

    def command(self, user_id: str, text: str = "", command: str = "/closeloop") -> Reply:
        fields = sample("slash_command.bolt_python_test.decoded.json")
        fields.update(
            user_id=user_id,
            text=text,
            command=command,
            trigger_id=self.slack.new_trigger_id(),
            response_url=self.slack.new_response_url(),  # never hooks.slack.com
            channel_id="CGENERAL",
        )
        body = urllib.parse.urlencode(fields).encode()
        return self.request("/slack/events", body, content_type="application/x-www-form-urlencoded")

    def click(
        self,
        user_id: str,
        action_id: str,
        value: str,
        *,
        channel: str,
        message_ts: str,
        settle: bool = True,
    ) -> Reply:
        payload = sample("block_actions_button.bolt_python_test.json")
        payload["user"] = {"id": user_id, "username": user_id.lower(), "team_id": "T111"}
        payload["container"] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        }
        payload["channel"] = {"id": channel, "name": "x"}
        payload["trigger_id"] = self.slack.new_trigger_id()
        payload["response_url"] = self.slack.new_response_url()  # never hooks.slack.com
        payload["message"] = {"ts": message_ts, "type": "message"}
        action = payload["actions"][0]
        action.update(action_id=action_id, value=value, block_id="b")
        return self.interactive(payload, settle=settle)

    def click_button(self, user_id: str, message: dict, channel: str, action_id: str) -> Reply:
        """Click the button with ``action_id`` on a message the bot posted (as Slack stores it)."""
        for block in message.get("blocks") or []:
            for element in block.get("elements") or []:
                if element.get("action_id") == action_id:
                    return self.click(
                        user_id,
                        action_id,
                        element["value"],
                        channel=channel,
                        message_ts=message["ts"],
                    )
        raise AssertionError(f"no {action_id} button on message {message.get('ts')}")

    def submit(self, user_id: str, view: dict, values: dict[str, str | None]) -> Reply:
        """Submit a modal the bot opened, typing ``values`` (block_id -> text) into it."""
        payload = sample("view_submission.bolt_python_test.json")
        payload["trigger_id"] = self.slack.new_trigger_id()
        payload["user"] = {"id": user_id, "username": user_id.lower(), "team_id": "T111"}
        submitted = copy.deepcopy(payload["view"])
        submitted.update(
            id=view.get("id", "V1"),
            blocks=view["blocks"],
            callback_id=view["callback_id"],
            private_metadata=view.get("private_metadata", ""),
            title=view["title"],
        )
        state: dict = {}
        for block in view["blocks"]:
            if block.get("type") != "input":
                continue
            element = block["element"]
            state[block["block_id"]] = {
                element["action_id"]: {
                    "type": element["type"],
                    "value": values.get(block["block_id"]),
                }
            }
        submitted["state"] = {"values": state}
        payload["view"] = submitted
        return self.interactive(payload)

    def event(
        self,
        event: dict,
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        sample_name: str = "message_im.slack_docs.json",
        settle: bool = True,
    ) -> Reply:
        envelope = sample(sample_name)
        envelope["event"] = event
        if event_id is None:
            self._event_seq += 1
            event_id = f"Ev{self._event_seq:08d}"
        envelope["event_id"] = event_id
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        return self.request(
            "/slack/events", json.dumps(envelope).encode(), headers=headers, settle=settle
        )

    def dm(self, user_id: str, text: str, **kwargs) -> Reply:
        return self.event(
            {
                "type": "message",
                "channel": self.slack.dm_channel_id(user_id),
                "user": user_id,
                "text": text,
                "ts": f"{time.time():.6f}",
                "event_ts": f"{time.time():.6f}",
                "channel_type": "im",
            },
            **kwargs,
        )

    def react(self, user_id: str, channel: str, ts: str, reaction: str, **kwargs) -> Reply:
        return self.event(
            {
                "type": "reaction_added",
                "user": user_id,
                "reaction": reaction,
                "item_user": "UBOT",
                "item": {"type": "message", "channel": channel, "ts": ts},
                "event_ts": f"{time.time():.6f}",
            },
            sample_name="reaction_added.slack_docs.json",
            **kwargs,
        )


ZONES = ("America/New_York", "Europe/Berlin", "Asia/Kolkata", "America/Los_Angeles")


def seed_sales_roster(fake_slack, session_factory, user_ids: list[str]) -> None:
    """A large sales team, in Slack (user group SSALES) and in the database with time zones
    already read, so a fan-out does not start with one users.info call per rep."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from bot.db import session_scope
    from bot.models import Member

    for n, user_id in enumerate(user_ids):
        fake_slack.add_user(user_id, tz=ZONES[n % len(ZONES)], name=f"rep{n}")
    fake_slack.set_usergroup("SSALES", user_ids)
    now = datetime.now(UTC)
    rows = [
        {
            "user_id": user_id,
            "name": f"rep{n}",
            "tz": ZONES[n % len(ZONES)],
            "tz_checked_at": now,
            "is_sales": True,
            "first_seen_at": now,
            "updated_at": now,
        }
        for n, user_id in enumerate(user_ids)
    ]
    with session_scope(session_factory) as session:
        session.execute(insert(Member), rows)
