"""Socket Mode end to end: the real app behind slack_bolt's SocketModeHandler (slack_sdk's
built-in WebSocket client), against the fake Web API (tests/fakeslack.py) and the fake Socket
Mode server (tests/fakesocket.py), both on 127.0.0.1. The clock is ours, as in
tests/test_loop_scenario.py."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from sqlalchemy import func, select

from bot.app import create_app
from bot.db import session_scope
from bot.event_inbox import EventInbox
from bot.jobs.tick import Tick
from bot.listeners.closeloop_command import HELP
from bot.models import FeedbackAnswer, InboundEvent
from bot.runtime import Runtime
from bot.slack.client import make_client
from tests.conftest import FakeClock, make_settings
from tests.fakeslack import FakeSlack
from tests.fakesocket import FakeSocketMode, accept_key, encode_frame
from tests.harness import TrackingExecutor, sample

APP_TOKEN = "xapp-1-A0001-1-sockettest"
FRI_1500_UTC = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 16:00 in Berlin: Ana is due
BULLETS = '- ROI calculator opener\n- Security deck; "we already have SSO"\n- Budgets move to Q3'


@dataclass
class SocketBot:
    """The app connected over Socket Mode, and what a test needs to drive it."""

    rt: Runtime
    app: App
    handler: SocketModeHandler
    executor: TrackingExecutor
    slack: FakeSlack
    socket: FakeSocketMode
    clock: FakeClock
    tick: Tick  # the scheduler's minute tick, on the app's event inbox (as `closeloop run`)

    def settle(self) -> None:
        """Wait until every listener, including its work after ack(), has finished."""
        self.executor.settle(timeout=5)

    def dm_body(self, user_id: str, text: str, *, event_id: str) -> dict:
        """The Events API body of a rep's message in the bot's DM (message.im)."""
        body = sample("message_im.slack_docs.json")
        ts = f"{time.time():.6f}"
        body["event"] = {
            "type": "message",
            "channel": self.slack.dm_channel_id(user_id),
            "user": user_id,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel_type": "im",
        }
        body["event_id"] = event_id
        return body

    def command_payload(self, user_id: str, text: str) -> dict:
        """``/closeloop <text>``: the fields HTTP mode gets form-encoded, as a JSON object."""
        payload = sample("slash_command.bolt_python_test.decoded.json")
        payload.update(
            user_id=user_id,
            text=text,
            command="/closeloop",
            trigger_id=self.slack.new_trigger_id(),
            channel_id="CGENERAL",
        )
        return payload

    def click_payload(self, user_id: str, message: dict, channel: str, action_id: str) -> dict:
        """block_actions for the button ``action_id`` on a message the bot posted."""
        value = next(
            element["value"]
            for block in message.get("blocks") or []
            for element in block.get("elements") or []
            if element.get("action_id") == action_id
        )
        payload = sample("block_actions_button.bolt_python_test.json")
        payload["user"] = {"id": user_id, "username": user_id.lower(), "team_id": "T111"}
        payload["container"] = {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel,
            "is_ephemeral": False,
        }
        payload["channel"] = {"id": channel, "name": "x"}
        payload["trigger_id"] = self.slack.new_trigger_id()
        payload["message"] = {"ts": message["ts"], "type": "message"}
        payload["actions"][0].update(action_id=action_id, value=value, block_id="b")
        return payload


@pytest.fixture
def socket_mode() -> Iterator[FakeSocketMode]:
    with FakeSocketMode() as server:
        yield server


@pytest.fixture
def bot(fake_slack, socket_mode, session_factory, database_url, clock) -> Iterator[SocketBot]:
    """Two reps in different time zones and one marketer, as in the HTTP scenario tests."""
    fake_slack.add_user("UANA", tz="Europe/Berlin", name="ana")
    fake_slack.add_user("UBEN", tz="America/Los_Angeles", name="ben")
    fake_slack.add_user("UMIA", tz="America/New_York", name="mia")
    fake_slack.set_usergroup("SSALES", ["UANA", "UBEN"])
    fake_slack.set_usergroup("SMKTG", ["UMIA"])
    fake_slack.add_channel("CMKTG", name="marketing-feedback")
    fake_slack.app_token = APP_TOKEN
    fake_slack.socket_url = socket_mode.issue_url
    settings = make_settings(
        fake_slack.url, database_url, SLACK_APP_TOKEN=APP_TOKEN, SLACK_SIGNING_SECRET=None
    )
    assert settings.socket_mode and settings.slack_signing_secret is None
    executor = TrackingExecutor()
    rt = Runtime.build(
        settings,
        client=make_client(settings, timeout=3),
        session_factory=session_factory,
        clock=clock,
        executor=executor,
        paced=False,
    )
    rt.outbox.resume()  # as the process holding the scheduler role does
    events = EventInbox(rt)
    app = create_app(rt, inbox=events)
    handler = SocketModeHandler(app, settings.slack_app_token)
    try:
        handler.connect()  # what `closeloop run` does in Socket Mode
        socket_mode.wait_connected(timeout=5)
        tick = Tick(rt, events)
        yield SocketBot(rt, app, handler, executor, fake_slack, socket_mode, clock, tick)
    finally:
        _close(handler, socket_mode)
        executor.shutdown(wait=True)  # listeners finish before the tables are wiped


def _close(handler: SocketModeHandler, server: FakeSocketMode) -> None:
    """Close the handler quickly and without races.

    slack_sdk's built-in client closes its socket only once its reader's 3-second recv
    timeout expires, and two threads disconnecting at once can crash it. So the server
    closes the connection first (as Slack does), with auto-reconnect off, and the handler is
    closed only once the client has dropped the socket itself. Its message-processor thread
    waits up to 1 s on its queue; a ``None`` (which it skips) wakes it up.
    """
    client = handler.client
    client.auto_reconnect_enabled = False
    if client.is_connected() and server.open_connections():
        try:
            server.close(1001, "test over", timeout=1)
        except (AssertionError, OSError):
            pass
        deadline = time.monotonic() + 5
        while client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
    client.closed = True  # what close() sets first; the processor loop checks it
    client.message_queue.put(None)
    handler.close()


# --------------------------------------------------------------------------- helpers


def dms_to(slack: FakeSlack, user_id: str) -> list:
    targets = {user_id, slack.dm_channel_id(user_id)}
    return [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] in targets]


def channel_posts(slack: FakeSlack, channel: str = "CMKTG") -> list:
    return [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.params["channel"] == channel and not c.params.get("thread_ts")
    ]


def all_text(message: dict) -> str:
    return json.dumps(message.get("blocks")) + message.get("text", "")


def count(bot: SocketBot, model) -> int:
    with session_scope(bot.rt.session_factory) as s:
        return s.scalar(select(func.count()).select_from(model))


def prompt_ana(bot: SocketBot) -> dict:
    """Friday 16:00 in Berlin: the scheduled work prompts Ana; returns the DM's call."""
    bot.clock.set(FRI_1500_UTC)
    bot.tick()
    (call,) = dms_to(bot.slack, "UANA")
    return call


def answer_over_socket(bot: SocketBot, event_id: str) -> dict:
    """Ana replies in the DM with three bullets; returns the envelope once acked and done."""
    envelope = bot.socket.events_api(bot.dm_body("UANA", BULLETS, event_id=event_id))
    (ack,) = bot.socket.wait_for_ack(envelope["envelope_id"], timeout=5)
    assert json.loads(ack.raw) == {"envelope_id": envelope["envelope_id"]}  # no payload
    bot.settle()
    return envelope


# --------------------------------------------------------------------------- the bot


def test_connects_with_the_app_token_and_gets_hello(bot):
    (call,) = bot.slack.calls_to("apps.connections.open")
    assert call.headers["authorization"] == f"Bearer {APP_TOKEN}"
    assert bot.handler.client.is_connected()
    assert bot.socket.connection_count == 1 and bot.socket.refused == []
    deadline = time.monotonic() + 10
    while not bot.socket.pings and time.monotonic() < deadline:  # its first ping comes soon
        time.sleep(0.05)
    assert bot.socket.pings, "slack_sdk pings after the handshake; the fake answers"


def test_dm_bullets_over_the_socket_post_once_to_marketing(bot):
    prompt = prompt_ana(bot)
    assert "What messaging worked" in all_text(prompt.params)

    envelope = answer_over_socket(bot, "EvSOCKET1")

    assert envelope["type"] == "events_api" and envelope["retry_attempt"] == 0
    (post,) = channel_posts(bot.slack)
    assert "<@UANA>" in all_text(post.params) and "ROI calculator opener" in all_text(post.params)
    assert "sent to marketing" in all_text(dms_to(bot.slack, "UANA")[-1].params)
    assert count(bot, FeedbackAnswer) == 1 and count(bot, InboundEvent) == 1
    assert bot.socket.errors == [] and bot.slack.server_errors == []


@pytest.mark.parametrize("new_envelope_id", [False, True], ids=["same-envelope", "new-envelope"])
def test_redelivered_event_is_acked_but_processed_once(bot, new_envelope_id):
    prompt_ana(bot)
    envelope = answer_over_socket(bot, "EvSOCKET2")
    # A second processing would not add a channel post (a second answer the same week edits
    # it in place), but it would update the post and confirm to Ana again.
    dms_before = len(dms_to(bot.slack, "UANA"))
    updates_before = len(bot.slack.calls_to("chat.update"))

    retry = bot.socket.redeliver(envelope, envelope_id="env-retry-1" if new_envelope_id else None)

    assert (retry["retry_attempt"], retry["retry_reason"]) == (1, "timeout")
    assert retry["payload"]["event_id"] == "EvSOCKET2"
    acks = bot.socket.wait_for_ack(retry["envelope_id"], count=1 if new_envelope_id else 2)
    assert acks[-1].payload is None and acks[-1].envelope["retry_attempt"] == 1
    bot.settle()
    assert len(channel_posts(bot.slack)) == 1
    assert len(dms_to(bot.slack, "UANA")) == dms_before
    assert len(bot.slack.calls_to("chat.update")) == updates_before
    assert count(bot, FeedbackAnswer) == 1 and count(bot, InboundEvent) == 1
    assert bot.socket.errors == []


def test_slash_command_help_is_answered_in_the_ack(bot):
    envelope = bot.socket.slash_commands(bot.command_payload("UANA", "help"))

    assert envelope["accepts_response_payload"] is True
    (ack,) = bot.socket.wait_for_ack(envelope["envelope_id"], timeout=5)
    assert ack.payload == {"text": HELP}
    assert "/closeloop help" in ack.payload["text"]
    bot.settle()
    assert bot.slack.calls_to("views.open") == [] and bot.slack.calls_to("chat.postMessage") == []


def test_button_and_modal_over_the_socket(bot):
    """interactive envelopes: the click opens the form; a blank submission is refused with
    response_action=errors carried in the ack's payload."""
    prompt = prompt_ana(bot)
    dm = bot.slack.messages[prompt.response["channel"]][prompt.response["ts"]]
    click = bot.click_payload("UANA", dm, prompt.response["channel"], "feedback_open")
    envelope = bot.socket.interactive(click)
    assert envelope["accepts_response_payload"] is False
    (ack,) = bot.socket.wait_for_ack(envelope["envelope_id"], timeout=5)
    assert ack.payload is None
    bot.settle()
    (opened,) = bot.slack.calls_to("views.open")
    modal = opened.params["view"]

    submission = sample("view_submission.bolt_python_test.json")
    submission["user"] = {"id": "UANA", "username": "ana", "team_id": "T111"}
    submission["trigger_id"] = bot.slack.new_trigger_id()
    values = {"worked": "x" * 3001, "fell_flat": " ", "insight": "ok"}
    state = {
        block["block_id"]: {
            block["element"]["action_id"]: {
                "type": block["element"]["type"],
                "value": values.get(block["block_id"]),
            }
        }
        for block in modal["blocks"]
        if block["type"] == "input"
    }
    submission["view"].update(
        id=opened.response["view"]["id"],
        blocks=modal["blocks"],
        callback_id=modal["callback_id"],
        private_metadata=modal.get("private_metadata", ""),
        title=modal["title"],
        state={"values": state},
    )
    envelope = bot.socket.interactive(submission)
    assert envelope["accepts_response_payload"] is True
    (ack,) = bot.socket.wait_for_ack(envelope["envelope_id"], timeout=5)
    assert ack.payload["response_action"] == "errors"
    assert set(ack.payload["errors"]) == {"worked", "fell_flat"}
    bot.settle()
    assert count(bot, FeedbackAnswer) == 0 and channel_posts(bot.slack) == []


def test_refresh_requested_reconnects_with_a_new_url(bot):
    """Takes ~3 s: slack_sdk closes the old connection only after its reader's 3 s recv
    timeout, and handles no envelope meanwhile (its message thread is the one reconnecting)."""
    bot.socket.disconnect("refresh_requested")
    bot.socket.wait_connected(count=2, timeout=5)
    bot.socket.wait_closed(1, timeout=5)  # the client drops the old connection itself
    assert len(bot.slack.calls_to("apps.connections.open")) == 2  # a fresh ticket

    envelope = bot.socket.slash_commands(bot.command_payload("UANA", "help"))
    (ack,) = bot.socket.wait_for_ack(envelope["envelope_id"], timeout=5)
    assert ack.connection == 2 and ack.payload == {"text": HELP}
    assert bot.socket.refused == [] and bot.socket.errors == []


# --------------------------------------------------------------------------- the fakes


def _handshake(port: int, path: str) -> tuple[socket.socket, bytes, str]:
    """A minimal client: returns (socket, bytes after the response head, status line)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    if lines[0].startswith("HTTP/1.1 101"):
        assert f"Sec-WebSocket-Accept: {accept_key(key)}" in lines
    return sock, rest, lines[0]


def _read_frame(sock: socket.socket, buffered: bytes) -> tuple[int, bytes, bytes]:
    """(opcode, payload, leftover bytes) of one unmasked server frame (< 64 KiB)."""
    data = buffered

    def need(n: int) -> None:
        nonlocal data
        while len(data) < n:
            chunk = sock.recv(4096)
            assert chunk, "server closed the connection"
            data += chunk

    need(2)
    length, offset = data[1] & 0x7F, 2
    if length == 126:
        need(4)
        (length,), offset = struct.unpack("!H", data[2:4]), 4
    need(offset + length)
    return data[0] & 0x0F, data[offset : offset + length], data[offset + length :]


def test_fake_socket_tickets_frames_and_protocol_errors(socket_mode):
    url = socket_mode.issue_url()
    path = url.split(str(socket_mode.port), 1)[1]
    sock, rest, status = _handshake(socket_mode.port, path)
    with sock:
        assert status == "HTTP/1.1 101 Switching Protocols"
        opcode, payload, rest = _read_frame(sock, rest)
        hello = json.loads(payload)
        assert (opcode, hello["type"], hello["connection_info"]["app_id"]) == (1, "hello", "A0001")
        mask = os.urandom(4)
        sock.sendall(encode_frame(0x9, b"are you there", mask=mask))
        opcode, payload, rest = _read_frame(sock, rest)
        assert (opcode, payload) == (0xA, b"are you there")
        envelope = socket_mode.slash_commands({"command": "/closeloop", "text": "x" * 200})
        opcode, payload, rest = _read_frame(sock, rest)
        assert json.loads(payload) == envelope and envelope["accepts_response_payload"] is True
        ack = json.dumps({"envelope_id": envelope["envelope_id"], "payload": {"text": "ok"}})
        sock.sendall(encode_frame(0x1, ack.encode(), mask=mask))
        (recorded,) = socket_mode.wait_for_ack(envelope["envelope_id"])
        assert recorded.payload == {"text": "ok"} and recorded.envelope == envelope
        sock.sendall(encode_frame(0x1, b'{"envelope_id": "x"}'))  # unmasked: not allowed
        opcode, payload, _ = _read_frame(sock, rest)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1002
    socket_mode.wait_closed(1)
    assert socket_mode.errors == ["connection 1: client frame is not masked"]

    reused, _, status = _handshake(socket_mode.port, path)  # a ticket opens one connection
    reused.close()
    unknown, _, status2 = _handshake(socket_mode.port, "/link/?ticket=forged")
    unknown.close()
    assert status == status2 == "HTTP/1.1 401 Unauthorized"
    assert len(socket_mode.refused) == 2 and socket_mode.connection_count == 1
