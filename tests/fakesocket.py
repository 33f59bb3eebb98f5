"""A fake Slack Socket Mode server for the test suite.

``FakeSocketMode`` listens on 127.0.0.1 (an OS-chosen port) and speaks just enough WebSocket
(RFC 6455, written here with the standard library) for slack_sdk's built-in Socket Mode client,
which ``slack_bolt.adapter.socket_mode.SocketModeHandler`` uses. Wire it to the fake Web API
so that ``apps.connections.open`` hands out its URLs::

    with FakeSocketMode() as socket_mode:
        fake_slack.socket_url = socket_mode.issue_url  # a fresh single-use ticket per call
        handler = SocketModeHandler(app, fake_slack.app_token)
        handler.connect()
        socket_mode.wait_connected()
        envelope = socket_mode.events_api(event_callback_body)
        (ack,) = socket_mode.wait_for_ack(envelope["envelope_id"])

What it does, as Slack does (frames from slackapi/python-slack-sdk's own mock server and from
captures quoted in slackapi/bolt-js#1061, see ../shared/slack-reference/samples/socket_mode):

- the opening handshake (``Sec-WebSocket-Accept``), only for a ticket it issued, once;
- a ``hello`` text frame as soon as the connection is open;
- envelopes ``{"envelope_id", "payload", "type", "accepts_response_payload"}`` (plus
  ``"retry_attempt"``/``"retry_reason"`` for ``events_api``) pushed by the test, and the same
  envelope redelivered with ``retry_attempt`` incremented and ``retry_reason: "timeout"``;
- every acknowledgement ``{"envelope_id": ...[, "payload": ...]}`` recorded as an :class:`Ack`;
- pings answered with pongs, pongs and the client's close frame recorded, ``disconnect``
  messages (``refresh_requested`` ...) and close frames sent on request.

Frames the client sends must be masked; unmasked, reserved-bit, oversized control, binary and
non-JSON frames are protocol errors, listed in :attr:`FakeSocketMode.errors` (the connection is
closed with 1002/1003/1007 where RFC 6455 says so). Not modelled: TLS (``wss://``), Slack's
own 3-second ack timer and automatic retries (the test calls :meth:`redeliver`), spreading
envelopes over several connections, ticket expiry by time, and extensions (permessage-deflate).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import logging
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Ack", "FakeSocketMode"]

log = logging.getLogger(__name__)

APP_ID = "A0001"  # the same app as tests/fakeslack.py
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HANDSHAKE = 16 * 1024
_MAX_MESSAGE = 16 * 1024 * 1024

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)

# interactive payload types whose ack may carry a response (response_action, options)
_INTERACTIVE_WITH_RESPONSE = ("view_submission", "block_suggestion")


# --------------------------------------------------------------------------- records


@dataclass
class Ack:
    """One acknowledgement the app sent back: ``{"envelope_id": ..., "payload"?: ...}``."""

    envelope_id: str
    payload: dict[str, Any] | None
    raw: str
    connection: int  # FakeSocketMode connection number (1, 2, ...)
    envelope: dict[str, Any] | None  # the envelope it acknowledges (None if unknown)


@dataclass
class _Frame:
    fin: bool
    opcode: int
    payload: bytes


class _ProtocolError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Connection:
    number: int
    sock: socket.socket
    ticket: str
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    open: bool = True
    close_sent: bool = False
    close_code: int | None = None  # from the client's close frame, if it sent one
    thread: threading.Thread | None = None

    def send_frame(self, opcode: int, payload: bytes) -> None:
        data = encode_frame(opcode, payload)
        with self.send_lock:
            self.sock.sendall(data)

    def shutdown(self) -> None:
        self.open = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


# --------------------------------------------------------------------------- framing


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None
) -> bytes:
    """One frame; servers send unmasked frames, clients pass a 4-byte ``mask``."""
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n <= 125:
        head += bytes([mask_bit | n])
    elif n <= 0xFFFF:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + _unmask(payload, mask)


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    repeated = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big"
    )


class _Reader:
    """Exact-length reads from a blocking socket; b"" from recv means the peer is gone."""

    def __init__(self, sock: socket.socket, initial: bytes = b"") -> None:
        self._sock = sock
        self._buf = bytearray(initial)

    def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self._sock.recv(max(4096, n - len(self._buf)))
            if not chunk:
                raise EOFError
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def frame(self) -> _Frame:
        b1, b2 = self.exactly(2)
        if b1 & 0x70:
            raise _ProtocolError(1002, "reserved bits set (no extension was negotiated)")
        opcode = b1 & 0x0F
        if opcode not in (OP_CONTINUATION, OP_TEXT, OP_BINARY, *_CONTROL):
            raise _ProtocolError(1002, f"reserved opcode {opcode:#x}")
        if not b2 & 0x80:
            raise _ProtocolError(1002, "client frame is not masked")
        length = b2 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self.exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self.exactly(8))
        fin = bool(b1 & 0x80)
        if opcode in _CONTROL and (length > 125 or not fin):
            raise _ProtocolError(1002, "control frame fragmented or longer than 125 bytes")
        if length > _MAX_MESSAGE:
            raise _ProtocolError(1009, f"frame of {length} bytes")
        mask = self.exactly(4)
        return _Frame(fin=fin, opcode=opcode, payload=_unmask(self.exactly(length), mask))


# --------------------------------------------------------------------------- the fake


class FakeSocketMode:
    """In-process fake of Slack's Socket Mode endpoint (see module docstring)."""

    def __init__(self, *, app_id: str = APP_ID, single_use_tickets: bool = True) -> None:
        """``single_use_tickets``: a URL from :meth:`issue_url` opens one connection."""
        self.app_id = app_id
        self.single_use_tickets = single_use_tickets
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._numbers = itertools.count(1)
        self._tickets: dict[str, bool] = {}  # ticket -> used
        self._connections: list[_Connection] = []
        self._envelopes: dict[str, list[dict[str, Any]]] = {}  # envelope_id -> deliveries
        self._acks: list[Ack] = []
        self._messages: list[dict[str, Any]] = []  # every text message the client sent
        self._pings: list[bytes] = []
        self._pongs: list[bytes] = []
        self._refused: list[str] = []
        self._errors: list[str] = []

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FakeSocketMode:
        if self._listener is not None:
            raise RuntimeError("FakeSocketMode already started")
        self._stopping.clear()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # so the accept loop notices stop()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"FakeSocketMode:{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, drop every connection, join the threads (idempotent)."""
        listener, thread = self._listener, self._accept_thread
        if listener is None:
            return
        self._stopping.set()
        if thread is not None:
            thread.join(timeout=5)
        listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.shutdown()
        for conn in connections:
            if conn.thread is not None:
                conn.thread.join(timeout=5)
        with self._changed:
            self._changed.notify_all()
        self._listener = self._accept_thread = None

    def __enter__(self) -> FakeSocketMode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("FakeSocketMode is not started")
        return int(self._listener.getsockname()[1])

    def issue_url(self) -> str:
        """A fresh ``ws://127.0.0.1:<port>/link/?ticket=...&app_id=...`` (what
        ``apps.connections.open`` answers); give this method to ``FakeSlack.socket_url``."""
        ticket = str(uuid.uuid4())
        with self._lock:
            self._tickets[ticket] = False
        return f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"

    # ----------------------------------------------------------------- inspection

    @property
    def acks(self) -> list[Ack]:
        with self._lock:
            return list(self._acks)

    def acks_for(self, envelope_id: str) -> list[Ack]:
        with self._lock:
            return [a for a in self._acks if a.envelope_id == envelope_id]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every JSON text message the client sent (acks included), in order."""
        with self._lock:
            return copy.deepcopy(self._messages)

    @property
    def pings(self) -> list[bytes]:
        """Payloads of the client's pings (each was answered with a pong)."""
        with self._lock:
            return list(self._pings)

    @property
    def pongs(self) -> list[bytes]:
        """Payloads of the client's pongs (answers to :meth:`ping`)."""
        with self._lock:
            return list(self._pongs)

    @property
    def refused(self) -> list[str]:
        """Why each refused handshake was refused (unknown or reused ticket, bad headers)."""
        with self._lock:
            return list(self._refused)

    @property
    def errors(self) -> list[str]:
        """Protocol violations by the client (a well-behaved client leaves this empty)."""
        with self._lock:
            return list(self._errors)

    @property
    def connection_count(self) -> int:
        """How many connections were ever opened (handshake accepted)."""
        with self._lock:
            return len(self._connections)

    def open_connections(self) -> list[int]:
        with self._lock:
            return [c.number for c in self._connections if c.open]

    def close_codes(self) -> dict[int, int | None]:
        """Connection number -> the status code of the client's close frame (None: none)."""
        with self._lock:
            return {c.number: c.close_code for c in self._connections}

    def wait_connected(self, count: int = 1, timeout: float = 5.0) -> None:
        """Block until ``count`` connections have been opened in total."""
        self._wait(lambda: len(self._connections) >= count, timeout, f"{count} connection(s)")

    def wait_closed(self, number: int, timeout: float = 5.0) -> None:
        """Block until connection ``number`` is closed (by either side)."""
        self._wait(
            lambda: any(c.number == number and not c.open for c in self._connections),
            timeout,
            f"connection {number} to close",
        )

    def wait_for_ack(self, envelope_id: str, count: int = 1, timeout: float = 5.0) -> list[Ack]:
        """Block until ``count`` acks for ``envelope_id`` arrived; AssertionError on timeout."""
        self._wait(
            lambda: len([a for a in self._acks if a.envelope_id == envelope_id]) >= count,
            timeout,
            f"{count} ack(s) for envelope {envelope_id}",
        )
        return self.acks_for(envelope_id)

    def wait_for_pong(self, count: int = 1, timeout: float = 5.0) -> list[bytes]:
        self._wait(lambda: len(self._pongs) >= count, timeout, f"{count} pong(s)")
        return self.pongs

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"FakeSocketMode: no {what} within {timeout}s; "
                        f"connections={[(c.number, c.open) for c in self._connections]}, "
                        f"acks={[a.envelope_id for a in self._acks]}, "
                        f"refused={self._refused}, errors={self._errors}"
                    )
                self._changed.wait(remaining)

    # ----------------------------------------------------------------- what Slack sends

    def push(
        self,
        envelope_type: str,
        payload: dict[str, Any],
        *,
        envelope_id: str | None = None,
        accepts_response_payload: bool | None = None,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Send an envelope on the newest open connection (waiting up to ``timeout`` for one);
        returns it. ``events_api`` envelopes carry ``retry_attempt: 0, retry_reason: ""``
        on the first delivery, as Slack's do."""
        if accepts_response_payload is None:
            accepts_response_payload = envelope_type == "slash_commands" or (
                envelope_type == "interactive" and payload.get("type") in _INTERACTIVE_WITH_RESPONSE
            )
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id or str(uuid.uuid4()),
            "payload": copy.deepcopy(payload),
            "type": envelope_type,
            "accepts_response_payload": accepts_response_payload,
        }
        if envelope_type == "events_api" or retry_attempt is not None:
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = retry_reason or ""
        self.send(envelope, timeout=timeout)
        return envelope

    def events_api(self, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """An Events API body (``{"type": "event_callback", "event": ...}``) as an envelope."""
        return self.push("events_api", body, **kwargs)

    def interactive(self, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """block_actions, view_submission, shortcut... payloads (the decoded JSON)."""
        return self.push("interactive", payload, **kwargs)

    def slash_commands(self, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """A slash command's fields (what HTTP mode receives form-encoded) as an envelope."""
        return self.push("slash_commands", payload, **kwargs)

    def redeliver(
        self,
        envelope: dict[str, Any],
        *,
        retry_reason: str = "timeout",
        envelope_id: str | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Deliver an ``events_api`` envelope again, as Slack does when it got no ack in
        time: same payload (same ``event_id``), ``retry_attempt`` one higher, ``retry_reason``
        set. The envelope_id is kept unless another is given."""
        if envelope.get("type") != "events_api":
            raise ValueError("Slack only redelivers events_api envelopes")
        again = copy.deepcopy(envelope)
        again["retry_attempt"] = int(envelope.get("retry_attempt") or 0) + 1
        again["retry_reason"] = retry_reason
        if envelope_id is not None:
            again["envelope_id"] = envelope_id
        self.send(again, timeout=timeout)
        return again

    def send(self, message: dict[str, Any], *, timeout: float = 5.0) -> None:
        """Send any JSON message as a text frame on the newest open connection."""
        conn = self._newest_open(timeout)
        if "envelope_id" in message:
            with self._lock:
                self._envelopes.setdefault(message["envelope_id"], []).append(
                    copy.deepcopy(message)
                )
        conn.send_frame(OP_TEXT, json.dumps(message).encode())

    def disconnect(self, reason: str = "refresh_requested", *, timeout: float = 5.0) -> None:
        """Ask the client to reconnect (``{"type": "disconnect", "reason": ...}``); the
        client opens a new connection and drops this one, as it does for Slack."""
        self.send(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}},
            timeout=timeout,
        )

    def ping(self, payload: bytes = b"fake-ping", *, timeout: float = 5.0) -> None:
        self._newest_open(timeout).send_frame(OP_PING, payload)

    def close(self, code: int = 1000, reason: str = "", *, timeout: float = 5.0) -> None:
        """Send a close frame on the newest open connection (the client may reconnect)."""
        conn = self._newest_open(timeout)
        conn.close_sent = True
        conn.send_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode())

    def _newest_open(self, timeout: float) -> _Connection:
        self._wait(
            lambda: any(c.open and not c.close_sent for c in self._connections),
            timeout,
            "open connection",
        )
        with self._lock:
            return [c for c in self._connections if c.open and not c.close_sent][-1]

    # ----------------------------------------------------------------- server side

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            threading.Thread(
                target=self._serve, args=(sock,), name="FakeSocketMode-conn", daemon=True
            ).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            conn, rest = self._handshake(sock)
        except (OSError, EOFError):
            sock.close()
            return
        if conn is None:
            sock.close()
            return
        try:
            self._read_loop(conn, _Reader(sock, rest))
        finally:
            conn.shutdown()
            with self._changed:
                self._changed.notify_all()

    def _handshake(self, sock: socket.socket) -> tuple[_Connection | None, bytes]:
        """Read the upgrade request; answer 101 + hello, or refuse it with an HTTP error."""
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > _MAX_HANDSHAKE:
                return self._refuse(sock, 431, "handshake too large"), b""
            chunk = sock.recv(4096)
            if not chunk:
                raise EOFError
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
            return self._refuse(sock, 400, f"bad request line {lines[0]!r}"), b""
        problem = _check_upgrade_headers(headers)
        if problem:
            return self._refuse(sock, 400, problem), b""
        target = urlsplit(parts[1])
        ticket = (parse_qs(target.query).get("ticket") or [""])[0]
        with self._lock:
            used = self._tickets.get(ticket)
            if target.path.rstrip("/") != "/link":
                reason = f"unknown path {target.path!r}"
            elif used is None:
                reason = f"unknown ticket {ticket!r}"
            elif used and self.single_use_tickets:
                reason = f"ticket {ticket!r} was already used"
            else:
                reason = ""
                self._tickets[ticket] = True
        if reason:
            return self._refuse(sock, 401, reason), b""
        response = (
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}\r\n\r\n"
        )
        with self._changed:
            conn = _Connection(next(self._numbers), sock, ticket)
            conn.thread = threading.current_thread()
            # the hello goes out before anyone else can pick this connection for an envelope
            with conn.send_lock:
                sock.sendall(response.encode())
            hello = {
                "type": "hello",
                "num_connections": 1 + sum(1 for c in self._connections if c.open),
                "debug_info": {
                    "host": "applink-fake",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
            conn.send_frame(OP_TEXT, json.dumps(hello).encode())
            self._connections.append(conn)
            self._changed.notify_all()
        return conn, rest

    def _refuse(self, sock: socket.socket, status: int, reason: str) -> None:
        with self._changed:
            self._refused.append(reason)
            self._changed.notify_all()
        phrase = {400: "Bad Request", 401: "Unauthorized", 431: "Request Header Fields Too Large"}
        body = reason.encode()
        try:
            sock.sendall(
                f"HTTP/1.1 {status} {phrase[status]}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        except OSError:
            pass
        return None

    def _read_loop(self, conn: _Connection, reader: _Reader) -> None:
        fragments: list[bytes] | None = None
        fragmented_opcode = OP_TEXT
        while not self._stopping.is_set():
            try:
                frame = reader.frame()
            except (EOFError, OSError):
                return  # the client closed the TCP connection (slack_sdk does, without a frame)
            except _ProtocolError as err:
                self._fail(conn, err.code, str(err))
                return
            if frame.opcode == OP_PING:
                with self._lock:
                    self._pings.append(frame.payload)
                self._try_send(conn, OP_PONG, frame.payload)
            elif frame.opcode == OP_PONG:
                with self._changed:
                    self._pongs.append(frame.payload)
                    self._changed.notify_all()
            elif frame.opcode == OP_CLOSE:
                with self._changed:
                    if len(frame.payload) >= 2:
                        (conn.close_code,) = struct.unpack("!H", frame.payload[:2])
                    self._changed.notify_all()
                if not conn.close_sent:  # echo it, then close the TCP connection
                    conn.close_sent = True
                    self._try_send(conn, OP_CLOSE, frame.payload[:2])
                return
            elif frame.opcode == OP_CONTINUATION:
                if fragments is None:
                    self._fail(conn, 1002, "continuation frame without a first frame")
                    return
                fragments.append(frame.payload)
                if frame.fin:
                    data, fragments = b"".join(fragments), None
                    if not self._message(conn, fragmented_opcode, data):
                        return
            else:  # text or binary
                if fragments is not None:
                    self._fail(conn, 1002, "new data frame inside a fragmented message")
                    return
                if not frame.fin:
                    fragments, fragmented_opcode = [frame.payload], frame.opcode
                elif not self._message(conn, frame.opcode, frame.payload):
                    return

    def _message(self, conn: _Connection, opcode: int, data: bytes) -> bool:
        """Handle one complete message; False when the connection was failed."""
        if opcode == OP_BINARY:
            self._fail(conn, 1003, "binary message (Socket Mode speaks JSON text)")
            return False
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._fail(conn, 1007, "text message is not valid UTF-8")
            return False
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            with self._changed:
                self._errors.append(f"connection {conn.number}: not a JSON object: {text[:200]!r}")
                self._changed.notify_all()
            return True
        with self._changed:
            self._messages.append(message)
            envelope_id = message.get("envelope_id")
            if isinstance(envelope_id, str):
                deliveries = self._envelopes.get(envelope_id)
                if deliveries is None:
                    self._errors.append(f"ack for an envelope never sent: {envelope_id}")
                payload = message.get("payload")
                self._acks.append(
                    Ack(
                        envelope_id=envelope_id,
                        payload=payload if isinstance(payload, dict) else None,
                        raw=text,
                        connection=conn.number,
                        envelope=copy.deepcopy(deliveries[-1]) if deliveries else None,
                    )
                )
                if payload is not None and not isinstance(payload, dict):
                    self._errors.append(f"ack {envelope_id}: payload is not an object")
            else:
                self._errors.append(f"message without envelope_id: {text[:200]!r}")
            self._changed.notify_all()
        return True

    def _fail(self, conn: _Connection, code: int, reason: str) -> None:
        with self._changed:
            self._errors.append(f"connection {conn.number}: {reason}")
            self._changed.notify_all()
        if not conn.close_sent:
            conn.close_sent = True
            self._try_send(conn, OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120])

    @staticmethod
    def _try_send(conn: _Connection, opcode: int, payload: bytes) -> None:
        try:
            conn.send_frame(opcode, payload)
        except OSError:
            pass


def _check_upgrade_headers(headers: dict[str, str]) -> str:
    """Why an opening handshake is not a WebSocket upgrade ("" when it is)."""
    if headers.get("upgrade", "").lower() != "websocket":
        return "Upgrade: websocket missing"
    if "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
        return "Connection: Upgrade missing"
    if headers.get("sec-websocket-version") != "13":
        return "Sec-WebSocket-Version is not 13"
    try:
        key = base64.b64decode(headers.get("sec-websocket-key", ""), validate=True)
    except ValueError:
        key = b""
    if len(key) != 16:
        return "Sec-WebSocket-Key is not 16 base64-encoded bytes"
    return ""
