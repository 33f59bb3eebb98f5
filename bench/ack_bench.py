"""Benchmark: acknowledgement latency of slash commands and view submissions over HTTP.

Issue #5, benchmark 2. In one run, the same load of signed Slack requests (form-encoded
``/closeloop`` slash commands and feedback-modal ``view_submission`` payloads, half each),
N requests at C concurrent keep-alive connections, goes to:

- ``closeloop``: Closeloop in HTTP mode, started the production way (``closeloop run``:
  gunicorn gthread workers, ``WEB_CONCURRENCY``/``WEB_THREADS`` or their defaults, the
  scheduler role on), against a fake Slack (tests/fakeslack.py) in a child process and a
  throwaway database. Each rep has this week's prompt (sent first with ``closeloop prompt
  --now``); a slash command opens the rep's feedback modal, a submission stores or edits the
  rep's answer and posts it to marketing's channel after the ack.
- ``bolt-dev``: a minimal Bolt app (``/closeloop`` and any view submission just ``ack()``) on
  Bolt's development server (``app.start(port=...)``), its client on the same fake Slack.

and, for reference, to two controls that locate the cost:

- ``floor``: a trivial keep-alive HTTP server (http.server, threaded) answering 200 at once:
  the load generator's own overhead plus loopback, the best a Python server can show here.
- ``bolt-gunicorn``: the same minimal Bolt app under gunicorn with Closeloop's settings
  (bot.wsgi.ProductionServer: workers, threads, reuse_port), i.e. Bolt and gunicorn without
  Closeloop's own work (nor its per-worker set-up: no garbage-collection changes).

Latency is request-to-response, measured with time.perf_counter in the load generator: one
thread driving C keep-alive connections with non-blocking sockets (epoll), every request built
and signed before the clock starts, so the generator's own cost stays small (it shares the
machine's 2 cores with the servers). Connection i plays rep i (a rep's own requests never
overlap), so C reps are set up. Two load patterns, each measured (``--patterns``):

- ``burst``: all C connections send a request at the same moment; the round ends when all are
  answered and the next starts ``--gap`` seconds (default 1) after it began. This is "50
  requests at once", as when a Friday prompt lands and reps answer together, with the work
  after the acks free to finish between rounds.
- ``closed``: each connection sends its next request as soon as the last one is answered: the
  server is saturated for the whole run, so at C connections throughput T gives a mean
  latency of C / T (Little's law): a capacity figure more than a latency one.

A warm-up precedes each measurement; on Closeloop it includes every rep's first answer, whose
post to marketing's channel is paced at SLACK_POST_RATE (5 a second), and the measurement
starts when that is done, so it measures the steady state (edits). ``--warmup 0`` measures the
burst of first answers instead.

Every response must be a 200 with the empty body of a plain ``ack()``, within 3 seconds
(Slack's limit; later counts as an error); on Closeloop the
benchmark then checks that every submission was stored (answers and edits in the database) and
every slash command opened a modal (views.open at the fake Slack) within 3 seconds of being
sent, as Slack's trigger_id requires, so it cannot be timing errors or work left behind.
Prints a table, machine information, and the CPU time of the server, the fake Slack and
the load generator, beside what the rest of the machine used meanwhile (this machine is
shared). Linux only (/proc). Exits 1 when Closeloop failed a request or a check.

    python bench/ack_bench.py                       # 2,000 requests at 50, SQLite in a temp dir
    python bench/ack_bench.py --quick               # a short run
    python bench/ack_bench.py --database-url postgresql://postgres@127.0.0.1:5432/test
    python bench/ack_bench.py --requests 5000 --concurrency 100 --targets closeloop,bolt-dev

On PostgreSQL it works in a throwaway database created beside the one given, dropped at the end.
"""

from __future__ import annotations

import argparse
import copy
import errno
import gc
import hashlib
import hmac
import http.client
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BOT_TOKEN = "xoxb-bench-token"
FEEDBACK_CHANNEL = "CMKTG"
MARKETER = "UMKT0001"
SAMPLES = ROOT / "tests" / "slack_samples"
TARGETS = ("floor", "bolt-dev", "bolt-gunicorn", "closeloop")
LABELS = {
    "closeloop": "Closeloop, gunicorn",
    "bolt-dev": "minimal Bolt, dev server",
    "bolt-gunicorn": "minimal Bolt, gunicorn (ref)",
    "floor": "trivial server (ref)",
}
PATTERNS = {
    "burst": "bursts of C requests sent at once (all connections), a round every --gap seconds",
    "closed": "closed loop (each connection sends again as soon as it is answered)",
}
ZONES = ("America/New_York", "Europe/Berlin", "America/Los_Angeles", "UTC", "Asia/Tokyo")


# --------------------------------------------------------------------------- child roles
# The servers run in child processes (this script with a role as its first argument), so the
# load generator's threads share the GIL with nobody. Each child prints one line when ready
# and exits when its stdin closes, so none outlives the benchmark even if it is killed.


def _exit_when_stdin_closes() -> None:
    def watch() -> None:
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def role_fake_slack(reps: int) -> None:
    """The fake Slack with ``reps`` sales reps (user group SSALES), one marketer, marketing's
    channel, and a ``bench.stats`` method answering the count of calls per method."""
    from tests.fakeslack import FakeSlack

    slack = FakeSlack(bot_token=BOT_TOKEN)
    ids = [rep_id(i) for i in range(reps)]
    for i, user in enumerate(ids):
        slack.add_user(user, tz=ZONES[i % len(ZONES)], name=f"rep{i}", email=f"rep{i}@example.com")
    slack.add_user(MARKETER, tz="Europe/London", name="marketer", email="mkt@example.com")
    slack.set_usergroup("SSALES", ids)
    slack.add_channel(FEEDBACK_CHANNEL, name="marketing-feedback")

    def stats(_params: dict) -> dict:
        ok: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        for call in slack.calls:
            if call.method != "bench.stats":
                (ok if call.ok else failed)[call.method] += 1
        opened = {  # trigger_id -> when views.open was answered (time.monotonic, system-wide)
            call.params.get("trigger_id"): call.at
            for call in slack.calls
            if call.method == "views.open" and call.ok
        }
        return {
            "ok_calls": ok,
            "failed_calls": failed,
            "server_errors": len(slack.server_errors),
            "views_opened_at": opened,
        }

    slack.register("bench.stats", stats)
    slack.start()
    _exit_when_stdin_closes()
    print(slack.url, flush=True)
    threading.Event().wait()


def minimal_bolt_app(slack_url: str, signing_secret: str):
    """The smallest Bolt app that answers the benchmark's requests: ack() and nothing else."""
    import re

    from slack_bolt import App
    from slack_sdk import WebClient

    app = App(
        client=WebClient(token=BOT_TOKEN, base_url=slack_url),  # auth.test goes to the fake
        signing_secret=signing_secret,
    )

    def just_ack(ack) -> None:
        ack()

    app.command("/closeloop")(just_ack)
    app.view(re.compile(".*"))(just_ack)
    return app


def role_bolt_dev(port: int, slack_url: str, signing_secret: str) -> None:
    app = minimal_bolt_app(slack_url, signing_secret)
    _exit_when_stdin_closes()
    print("ready", flush=True)
    # Bolt's development server (http.server.HTTPServer); its per-request access log is
    # turned off, as gunicorn's is for Closeloop, so neither pays for a log line.
    app.start(port=port, http_server_logger_enabled=False)


def role_bolt_gunicorn(port: int, slack_url: str, signing_secret: str) -> None:
    """The minimal app under Closeloop's own gunicorn configuration (ProductionServer)."""
    from slack_bolt.adapter.wsgi import SlackRequestHandler

    from bot.config import Audience, Settings
    from bot.wsgi import ProductionServer

    class MinimalServer(ProductionServer):
        def load(self):
            return SlackRequestHandler(minimal_bolt_app(slack_url, signing_secret))

    settings = Settings(
        slack_bot_token=BOT_TOKEN,
        feedback_channel=FEEDBACK_CHANNEL,
        sales=Audience(usergroup="SSALES"),
        marketing=Audience(users=(MARKETER,)),
        slack_signing_secret=signing_secret,
        port=port,
    )

    def stop_when_stdin_closes() -> None:  # gunicorn's own graceful stop, workers included
        sys.stdin.read()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    print("ready", flush=True)
    MinimalServer(settings, scheduler=False).run()


def role_floor(port: int) -> None:
    """A trivial threaded HTTP/1.1 server: read the body, answer 200 with an empty body."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST  # noqa: N815

        def log_message(self, format, *args) -> None:  # noqa: A002
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    server = Server(("127.0.0.1", port), Handler)
    _exit_when_stdin_closes()
    print("ready", flush=True)
    server.serve_forever()


ROLES = {
    "_fake-slack": lambda a: role_fake_slack(int(a[0])),
    "_bolt-dev": lambda a: role_bolt_dev(int(a[0]), a[1], a[2]),
    "_bolt-gunicorn": lambda a: role_bolt_gunicorn(int(a[0]), a[1], a[2]),
    "_floor": lambda a: role_floor(int(a[0])),
}


# --------------------------------------------------------------------------- processes


class Children:
    """Every child process started, each in its own session; stopped by process group."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # closed in stop()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if name.startswith("role-") else log,
            stderr=log,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the group ourselves
            cwd=ROOT,
        )
        proc.log = log  # type: ignore[attr-defined]
        self.procs[name] = proc
        return proc

    def stop(self, name: str, *, grace: float = 25.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # gunicorn: graceful stop of the workers
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group (workers)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        proc.log.close()  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name, grace=10.0)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in process group ``pgid`` (Linux)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used (all CPUs, from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no answer on 127.0.0.1:{port}{path} within {timeout:.0f}s")


# --------------------------------------------------------------------------- what Slack sends


def rep_id(i: int) -> str:
    return f"UREP{i:04d}"


def sign(secret: str, body: bytes, timestamp: str) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class Payloads:
    """Form-encoded request bodies as Slack sends them, from tests/slack_samples."""

    def __init__(self, prompts: dict[str, tuple[int, object]]) -> None:
        from bot.blocks import feedback as fb_blocks

        self.command = json.loads(
            (SAMPLES / "slash_command.bolt_python_test.decoded.json").read_text()
        )
        self.submission = json.loads(
            (SAMPLES / "view_submission.bolt_python_test.json").read_text()
        )
        self.views = {
            user: fb_blocks.feedback_modal(prompt_id=prompt_id, week_start=week)
            for user, (prompt_id, week) in prompts.items()
        }
        self._seq = 0
        self._lock = threading.Lock()

    def trigger_id(self) -> str:
        with self._lock:
            self._seq += 1
            n = self._seq
        return f"{n}.{int(time.time())}.{hashlib.sha1(str(n).encode()).hexdigest()[:24]}"

    def slash(self, user: str, trigger_id: str) -> bytes:
        fields = dict(self.command)
        fields.update(
            team_id="T0001",
            user_id=user,
            user_name=user.lower(),
            command="/closeloop",
            text="",
            channel_id="C0GENERAL",
            channel_name="general",
            trigger_id=trigger_id,
        )
        return urllib.parse.urlencode(fields).encode()

    def view_submission(self, user: str, n: int) -> bytes:
        """The feedback modal Closeloop opened for ``user``, submitted with three bullets."""
        modal = self.views[user]
        payload = copy.deepcopy(self.submission)
        payload["team"] = {"id": "T0001", "domain": "closeloop-test"}
        payload["user"] = {"id": user, "username": user.lower(), "team_id": "T0001"}
        payload["trigger_id"] = self.trigger_id()
        values = {
            "worked": f"The ROI calculator opener landed with finance (take {n})",
            "fell_flat": 'The security deck; "we already have SSO" ended the call',
            "insight": "Two prospects said budgets are moving to Q3",
            "campaign": "Q3 webinar",
        }
        state = {
            block["block_id"]: {
                block["element"]["action_id"]: {
                    "type": "plain_text_input",
                    "value": values[block["block_id"]],
                }
            }
            for block in modal["blocks"]
            if block.get("type") == "input"
        }
        payload["view"].update(
            id=f"V{user[-6:]}",
            team_id="T0001",
            callback_id=modal["callback_id"],
            private_metadata=modal["private_metadata"],
            title=modal["title"],
            blocks=modal["blocks"],
            state={"values": state},
        )
        return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


# --------------------------------------------------------------------------- the load


@dataclass
class Result:
    kind: str
    seconds: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    body: bytes
    sent_at: float = 0.0  # time.monotonic() when the request was sent
    trigger_id: str | None = None  # a slash command's, to find the modal it opened


@dataclass
class Run:
    results: list[Result]
    wall: float
    client_cpu: float
    server_cpu: float
    slack_cpu: float
    machine_cpu: float  # every process on the machine, ours and anybody else's

    def of(self, kind: str) -> list[Result]:
        return [r for r in self.results if r.kind == kind]


def build_requests(
    port: int, *, total: int, concurrency: int, secret: str, payloads: Payloads
) -> list[list[tuple[str, bytes, str | None]]]:
    """Every request, signed and encoded before the clock starts: connection i is rep i (a
    rep's requests are sequential, like one person's), alternating slash commands and view
    submissions. Built up front so the load generator's own work while measuring is a send
    and a read (the signatures stay well inside Slack's 5-minute window)."""
    timestamp = str(int(time.time()))
    plan: list[list[tuple[str, bytes, str | None]]] = []
    for i in range(concurrency):
        user, mine = rep_id(i), []
        for j, n in enumerate(range(i, total, concurrency)):
            kind = "slash" if (i + j) % 2 == 0 else "view"
            trigger = payloads.trigger_id() if kind == "slash" else None
            body = (
                payloads.slash(user, trigger)
                if trigger is not None
                else payloads.view_submission(user, n)
            )
            head = (
                f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"X-Slack-Request-Timestamp: {timestamp}\r\n"
                f"X-Slack-Signature: {sign(secret, body, timestamp)}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            mine.append((kind, head.encode() + body, trigger))
        plan.append(mine)
    return plan


class _Conn:
    """One keep-alive client connection of the driver, a small state machine."""

    def __init__(self, requests: list[tuple[str, bytes, str | None]]) -> None:
        self.requests = requests
        self.next = 0  # index of the next request to send
        self.sock: socket.socket | None = None
        self.connected = False
        self.out = b""
        self.inbuf = bytearray()
        self.kind = ""
        self.trigger: str | None = None
        self.started = 0.0
        self.sent_at = 0.0
        self.busy = False

    @property
    def more(self) -> bool:
        return self.next < len(self.requests)


def drive(
    port: int,
    *,
    total: int,
    concurrency: int,
    secret: str,
    payloads: Payloads,
    pattern: str = "closed",
    gap: float = 1.0,
    timeout: float = 3.0,
) -> list[Result]:
    """``total`` signed requests over ``concurrency`` keep-alive connections, from one thread
    with non-blocking sockets (an epoll loop: no thread per connection, so the generator's own
    cost and scheduling stay out of the figures as far as Python allows).

    ``closed``: each connection sends its next request as soon as the last is answered.
    ``burst``: every connection sends one request at the same moment, the round ends when all
    are answered, and the next round starts ``gap`` seconds later.

    A request unanswered after ``timeout`` seconds (Slack's own limit is 3) is an error with
    that latency, and its connection is closed: a server whose listen queue overflowed, like
    Bolt's development server, would otherwise hold a round for TCP's 1, 3, 7 s SYN retries.
    """
    import selectors

    plan = build_requests(
        port, total=total, concurrency=concurrency, secret=secret, payloads=payloads
    )
    conns = [_Conn(requests) for requests in plan]
    results: list[Result] = []
    sel = selectors.DefaultSelector()

    def close(conn: _Conn) -> None:
        if conn.sock is not None:
            try:
                sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()
        conn.sock, conn.connected = None, False

    def finish(conn: _Conn, status: int, body: bytes) -> None:
        results.append(
            Result(
                conn.kind,
                time.perf_counter() - conn.started,
                status,
                body,
                sent_at=conn.sent_at,
                trigger_id=conn.trigger,
            )
        )
        conn.busy = False
        conn.inbuf.clear()
        if status == 0:
            close(conn)
        elif conn.sock is not None:
            sel.modify(conn.sock, selectors.EVENT_READ, conn)  # an early close is seen

    def start(conn: _Conn) -> None:
        conn.kind, request, conn.trigger = conn.requests[conn.next]
        conn.next += 1
        conn.busy, conn.out = True, request
        conn.inbuf.clear()
        conn.started, conn.sent_at = time.perf_counter(), time.monotonic()
        if conn.sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            err = sock.connect_ex(("127.0.0.1", port))
            conn.sock = sock
            if err not in (0, errno.EINPROGRESS):
                finish(conn, 0, f"connect: {os.strerror(err)}".encode())
                return
            sel.register(sock, selectors.EVENT_WRITE, conn)
            return
        sel.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def on_write(conn: _Conn) -> None:
        assert conn.sock is not None
        if not conn.connected:
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                finish(conn, 0, f"connect: {os.strerror(err)}".encode())
                return
            conn.connected = True
        try:
            sent = conn.sock.send(conn.out)
        except OSError as err:
            finish(conn, 0, repr(err).encode())
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def on_read(conn: _Conn) -> None:
        assert conn.sock is not None
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as err:
            if conn.busy:
                finish(conn, 0, repr(err).encode())
            else:
                close(conn)
            return
        if not conn.busy:  # the server closed an idle keep-alive connection
            close(conn)
            return
        if not data:
            finish(conn, 0, b"connection closed before the response")
            return
        conn.inbuf += data
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(conn.inbuf[:end]).decode("latin-1").split("\r\n")
        version, status = head[0].split(" ", 2)[:2]
        fields = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])
        }
        length = int(fields.get("content-length", "0"))
        if len(conn.inbuf) - end - 4 < length:
            return
        body = bytes(conn.inbuf[end + 4 : end + 4 + length])
        closing = version == "HTTP/1.0" or fields.get("connection", "").lower() == "close"
        finish(conn, int(status), body)
        if closing:
            close(conn)

    def expire(now: float) -> None:
        for conn in conns:
            if conn.busy and now - conn.started > timeout:
                finish(conn, 0, b"timeout")  # and close it

    def pump(*, send_again: bool) -> None:
        """Serve the sockets until every connection is answered; ``send_again``: a connection
        sends its next request as soon as it has its answer (or was given up on)."""
        while any(c.busy for c in conns):
            for key, events in sel.select(timeout=1.0):
                if events & selectors.EVENT_WRITE:
                    on_write(key.data)
                elif events & selectors.EVENT_READ:
                    on_read(key.data)
            expire(time.perf_counter())
            for conn in conns if send_again else ():
                if not conn.busy and conn.more:
                    start(conn)

    # No garbage collection in the generator while it measures (as timeit does): a full
    # collection over the results of earlier targets would stop this loop for milliseconds and
    # count against whichever server was answering at that moment.
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    try:
        if pattern == "closed":
            for conn in conns:
                start(conn)
            pump(send_again=True)
        elif pattern == "burst":
            while any(c.more for c in conns):
                round_started = time.perf_counter()
                for conn in conns:
                    if conn.more:
                        start(conn)
                pump(send_again=False)
                pause = gap - (time.perf_counter() - round_started)
                if pause > 0 and any(c.more for c in conns):
                    time.sleep(pause)
        else:
            raise ValueError(f"unknown pattern {pattern!r}")
    finally:
        if collecting:
            gc.enable()
    for conn in conns:
        close(conn)
    sel.close()
    return results


def acked(result: Result) -> bool:
    """A plain ack(): HTTP 200 and an empty body (not an error message, not inline errors)."""
    return result.status == 200 and not result.body.strip()


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


# --------------------------------------------------------------------------- set-up


def slack_stats(slack_url: str) -> dict:
    req = urllib.request.Request(
        slack_url + "bench.stats",
        data=b"{}",
        headers={
            "Authorization": f"Bearer {BOT_TOKEN}",
            "Content-Type": "application/json; charset=utf-8",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def throwaway_postgres(base_url: str):
    """(url, drop) for a new database beside ``base_url``'s (tests.conftest's helper)."""
    from tests.conftest import postgres_database

    database = postgres_database(base_url, prefix="closeloop_bench")
    return database.__enter__(), lambda: database.__exit__(None, None, None)


def closeloop_env(slack_url: str, database_url: str, secret: str, workdir: Path) -> dict:
    """The environment an operator sets for HTTP mode (no SLACK_APP_TOKEN), nothing else."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),  # gunicorn's control socket goes under $HOME: keep it ours
        "CLOSELOOP_ENV_FILE": str(workdir / "absent.env"),  # no .env from the checkout
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": secret,
        "SLACK_API_URL": slack_url,
        "DATABASE_URL": database_url,
        "FEEDBACK_CHANNEL": FEEDBACK_CHANNEL,
        "SALES_USERGROUP": "SSALES",
        "MARKETING_USERS": MARKETER,
    }
    for name in ("WEB_CONCURRENCY", "WEB_THREADS", "LOG_LEVEL", "SLACK_POST_RATE"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def seed_prompts(env: dict, database_url: str, reps: int) -> dict[str, tuple[int, object]]:
    """This week's prompt for every rep, sent the way an operator would (``closeloop prompt
    --now``, paced fast so it takes a second), then one ``closeloop tick``, so the server's
    scheduler does not start with catch-up work (such as last month's digest and its chart)
    in the middle of the measurement; returns rep -> (prompt id, week start)."""
    from sqlalchemy import select

    from bot.db import make_engine
    from bot.models import Prompt

    for command in (["prompt", "--now"], ["tick"]):
        proc = subprocess.run(
            [sys.executable, "-m", "bot", *command],
            env={**env, "SLACK_POST_RATE": "100", "LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=180,
            cwd=ROOT,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"closeloop {' '.join(command)} failed:\n{proc.stdout}{proc.stderr}")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(Prompt.user_id, Prompt.id, Prompt.week_start)).all()
    engine.dispose()
    prompts = {user: (pid, week) for user, pid, week in rows}
    missing = [rep_id(i) for i in range(reps) if rep_id(i) not in prompts]
    if missing:
        raise RuntimeError(f"no prompt for {len(missing)} reps, e.g. {missing[0]}")
    return prompts


def stored_submissions(database_url: str) -> int:
    """Submissions the database holds: each answer counts its first version and its edits."""
    from sqlalchemy import func, select

    from bot.db import make_engine
    from bot.models import FeedbackAnswer

    engine = make_engine(database_url)
    with engine.connect() as conn:
        count, edits = conn.execute(
            select(
                func.count(FeedbackAnswer.id), func.coalesce(func.sum(FeedbackAnswer.edit_count), 0)
            )
        ).one()
    engine.dispose()
    return int(count) + int(edits)


# --------------------------------------------------------------------------- one target


@dataclass
class Outcome:
    target: str
    runs: dict[str, Run]  # by load pattern
    warmup: list[Result]

    @property
    def results(self) -> list[Result]:
        return [r for run in self.runs.values() for r in run.results]

    notes: list[str] = field(default_factory=list)
    verified: bool = True


def measure(
    children: Children,
    name: str,
    port: int,
    *,
    args,
    secret: str,
    payloads: Payloads,
    slack_pgid: int,
    after_warmup=None,
) -> tuple[dict[str, Run], list[Result]]:
    """A warm-up, then one measured run for each of ``args.patterns``."""
    proc = children.procs[name]
    warmup = drive(
        port, total=args.warmup, concurrency=args.concurrency, secret=secret, payloads=payloads
    )
    runs: dict[str, Run] = {}
    for pattern in args.patterns:
        if after_warmup:
            after_warmup()
        time.sleep(0.5)
        cpu0, slack0, client0 = (
            group_cpu_seconds(proc.pid),
            group_cpu_seconds(slack_pgid),
            time.process_time(),
        )
        machine0 = machine_cpu_seconds()
        started = time.perf_counter()
        results = drive(
            port,
            total=args.requests,
            concurrency=args.concurrency,
            secret=secret,
            payloads=payloads,
            pattern=pattern,
            gap=args.gap,
        )
        wall = time.perf_counter() - started
        runs[pattern] = Run(
            results=results,
            wall=wall,
            client_cpu=time.process_time() - client0,
            server_cpu=group_cpu_seconds(proc.pid) - cpu0,
            slack_cpu=group_cpu_seconds(slack_pgid) - slack0,
            machine_cpu=machine_cpu_seconds() - machine0,
        )
    return runs, warmup


def start_role(children: Children, role: str, argv: list[str], *, timeout: float = 60) -> None:
    proc = children.start(
        f"role-{role}",
        [sys.executable, str(Path(__file__).resolve()), f"_{role}", *argv],
        env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(children.workdir)},
    )
    ready = proc.stdout.readline().decode().strip() if proc.stdout else ""
    if not ready:
        raise RuntimeError(f"{role} did not start:\n{children.log_tail(f'role-{role}')}")
    proc.ready_line = ready  # type: ignore[attr-defined]


def bench_target(
    target: str, children: Children, *, args, secret, payloads, slack_url, slack_pgid, env, db_url
) -> Outcome:
    port = free_port()
    notes: list[str] = []
    if target == "closeloop":
        name = "closeloop"
        proc = children.start(
            name, [sys.executable, "-m", "bot", "run"], env={**env, "PORT": str(port)}
        )
        wait_http(port, "/healthz", 90, proc)
    else:
        name = f"role-{target}"
        extra = [slack_url, secret] if target.startswith("bolt") else []
        start_role(children, target, [str(port), *extra])
        wait_http(port, "/healthz", 60, children.procs[name])  # a 404 from Bolt: it is up
        if target == "bolt-dev":
            notes = [
                "Bolt's development server is http.server.HTTPServer: one request at a time, "
                "HTTP/1.0 (a connection per request), a listen backlog of 5"
            ]
    before = slack_stats(slack_url)["ok_calls"] if target == "closeloop" else {}
    sessions: list[int | None] = []
    runs, warmup = measure(
        children,
        name,
        port,
        args=args,
        secret=secret,
        payloads=payloads,
        slack_pgid=slack_pgid,
        # The warm-up's first answers are posted to marketing's channel at SLACK_POST_RATE
        # (5 a second): let that finish, so the measurement is of the steady state.
        after_warmup=(lambda: sessions.append(settle_and_count_sessions(slack_url, db_url)))
        if target == "closeloop"
        else None,
    )
    outcome = Outcome(target, runs, warmup, notes=notes)
    if target == "closeloop":
        verify_closeloop(outcome, slack_url=slack_url, db_url=db_url, before=before)
        opened = pg_sessions(db_url)
        if opened is not None and sessions[0] is not None:
            opened -= sessions[0] + 1  # this query's own session
            outcome.notes.append(
                f"PostgreSQL sessions (connections) opened by the server during the measured "
                f"requests and their work after the ack: {opened} "
                f"({opened / len(outcome.results):.2f} a request)"
            )
        log_lines = (children.workdir / "closeloop.log").read_text(errors="replace").splitlines()
        outcome.notes.append(f"server log: {len(log_lines)} lines during the whole run")
    children.stop(name)
    return outcome


def wait_until_quiet(slack_url: str, *, quiet: float = 2.0, timeout: float = 120) -> dict:
    """Wait until the fake Slack has received no call for ``quiet`` seconds; its stats."""
    deadline = time.monotonic() + timeout
    last, stable_since = None, time.monotonic()
    while True:
        stats = slack_stats(slack_url)
        snapshot = json.dumps(stats["ok_calls"], sort_keys=True)
        if snapshot != last:
            last, stable_since = snapshot, time.monotonic()
        if time.monotonic() - stable_since >= quiet or time.monotonic() > deadline:
            return stats
        time.sleep(0.25)


def pg_sessions(db_url: str) -> int | None:
    """Sessions ever opened to the database (pg_stat_database.sessions, PostgreSQL 14+),
    counting the one this opens; None on SQLite."""
    if not db_url.startswith(("postgres", "postgresql")):
        return None
    from sqlalchemy import text

    from bot.db import make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            return conn.execute(
                text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
    finally:
        engine.dispose()


def settle_and_count_sessions(slack_url: str, db_url: str) -> int | None:
    wait_until_quiet(slack_url)
    return pg_sessions(db_url)


def verify_closeloop(outcome: Outcome, *, slack_url: str, db_url: str, before: dict) -> None:
    """Every acked submission stored, every acked slash command opened its modal."""
    everything = outcome.warmup + outcome.results
    views_sent = sum(1 for r in everything if r.kind == "view" and acked(r))
    slash_sent = sum(1 for r in everything if r.kind == "slash" and acked(r))
    stats = wait_until_quiet(slack_url)  # the work after each ack (Slack calls) to finish
    ok = stats["ok_calls"]
    opened = ok.get("views.open", 0) - before.get("views.open", 0)
    stored = stored_submissions(db_url)
    calls = {k: v - before.get(k, 0) for k, v in ok.items() if v - before.get(k, 0)}
    # A request Bolt gave up on (no ack in 3 s) still runs later, beside the same rep's next
    # one: then an edit can be lost or land unacked, so the counts may be off by that many.
    unacked = sum(1 for r in everything if not acked(r))
    # A modal must open within 3 s of the slash command: Slack's trigger_id expires then.
    opened_at = stats["views_opened_at"]
    phases = {"warm-up": outcome.warmup, **{p: run.results for p, run in outcome.runs.items()}}
    late = 0
    for phase, results in phases.items():
        waits = sorted(
            opened_at[r.trigger_id] - r.sent_at
            for r in results
            if r.kind == "slash" and acked(r) and r.trigger_id in opened_at
        )
        if not waits:
            continue
        over = sum(1 for w in waits if w > 3.0)
        late += over
        outcome.notes.append(
            f"{phase}: modal opened after its slash command was sent: p50 "
            f"{percentile(waits, 50):.2f} s, p99 {percentile(waits, 99):.2f} s, max "
            f"{waits[-1]:.2f} s; {over} later than 3 s (Slack's trigger_id would have expired)"
        )
    outcome.verified = (
        abs(stored - views_sent) <= unacked
        and abs(opened - slash_sent) <= unacked
        and not stats["failed_calls"]
        and late == 0
    )
    outcome.notes.append(
        f"processed: {stored}/{views_sent} acked submissions stored (answers + edits in the "
        f"database), {opened}/{slash_sent} acked slash commands opened the modal (views.open)"
        + (f"; {unacked} not acked, so these may be off by as many" if unacked else "")
    )
    outcome.notes.append(
        "fake Slack calls after the acks: "
        + ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
        + f"; refused: {dict(stats['failed_calls']) or 'none'}; "
        f"fake Slack errors: {stats['server_errors']}"
    )


# --------------------------------------------------------------------------- report


def machine_info() -> list[str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = ", ".join(
        f"{pkg} {metadata.version(pkg)}" for pkg in ("slack_bolt", "gunicorn", "SQLAlchemy")
    )
    load = os.getloadavg()
    return [
        f"machine: {os.cpu_count()} CPUs ({usable} usable){', ' + model if model else ''}; "
        f"{platform.system()} {platform.release()}; load average now {load[0]:.2f}, "
        f"{load[1]:.2f}, {load[2]:.2f} (1, 5, 15 min)",
        f"python: {platform.python_implementation()} {platform.python_version()}; {versions}",
    ]


def report(outcomes: list[Outcome], args, backend: str, load_start: tuple) -> None:
    from bot.config import web_concurrency, web_threads

    workers, threads = web_concurrency(), web_threads()
    print()
    for line in machine_info():
        print(line)
    print(
        "load average at the start: "
        + ", ".join(f"{x:.2f}" for x in load_start)
        + " (other processes on this machine share its CPUs; see 'others' below)"
    )
    print(
        f"load: {args.requests} requests a target (half slash commands, half view submissions) "
        f"at {args.concurrency} concurrent keep-alive connections, after {args.warmup} warm-up "
        "requests; latency = request sent to response read, in the client"
    )
    print(
        f"closeloop: `closeloop run` (HTTP mode), gunicorn gthread {workers} workers x {threads} "
        f"threads, scheduler role on; database: {backend}; Slack: fake, in a child process"
    )
    print()
    head = (
        f"{'target':<29} {'load':<6} {'kind':<5} {'requests':>8} {'conc':>4} {'p50 ms':>7} "
        f"{'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6} {'req/s':>6}"
    )
    print(head)
    print("-" * len(head))
    for outcome in outcomes:
        first = True
        for pattern, run in outcome.runs.items():
            for kind in ("slash", "view", "all"):
                rows = run.results if kind == "all" else run.of(kind)
                ms = sorted(r.seconds * 1000 for r in rows)
                errors = sum(1 for r in rows if not acked(r))
                label = LABELS[outcome.target] if first else ""
                first = False
                load = pattern if kind == "slash" else ""
                rate = f"{len(rows) / run.wall:.0f}" if kind == "all" else ""
                print(
                    f"{label:<29} {load:<6} {kind:<5} {len(rows):>8} {args.concurrency:>4} "
                    f"{percentile(ms, 50):>7.1f} {percentile(ms, 90):>7.1f} "
                    f"{percentile(ms, 99):>7.1f} {ms[-1]:>7.1f} {errors:>6} {rate:>6}"
                )
    print()
    for outcome in outcomes:
        for pattern, run in outcome.runs.items():
            ours = run.server_cpu + run.slack_cpu + run.client_cpu
            print(
                f"{outcome.target}, {pattern}: {run.wall:.1f} s; CPU seconds: server "
                f"{run.server_cpu:.1f} ({run.server_cpu / len(run.results) * 1e3:.1f} ms a "
                f"request, work after the ack included), fake Slack {run.slack_cpu:.1f}, load "
                f"generator {run.client_cpu:.1f} "
                f"({run.client_cpu / len(run.results) * 1e6:.0f} us a request); CPUs busy: "
                f"{ours / run.wall:.2f} ours, {max(0.0, run.machine_cpu - ours) / run.wall:.2f} "
                f"others (database server, other users) of {os.cpu_count()}"
            )
        reasons = Counter(
            f"HTTP {r.status} {r.body[:80]!r}"
            for r in outcome.warmup + outcome.results
            if not acked(r)
        )
        for reason, count in reasons.most_common(5):
            print(f"  not a plain ack, {count}x: {reason}")
        for note in outcome.notes:
            print(f"  {note}")
        if "burst" in outcome.runs:
            print(f"  {burst_rounds(outcome.runs['burst'].results)}")
    closeloop = next((o for o in outcomes if o.target == "closeloop"), None)
    if closeloop:
        print()
        for pattern, run in closeloop.runs.items():
            p99 = percentile(sorted(r.seconds * 1000 for r in run.results), 99)
            verdict = "met" if p99 < 100 else "NOT met"
            print(
                f"target p99 < 100 ms for Closeloop, {PATTERNS[pattern]}: {p99:.1f} ms, {verdict}"
            )


def burst_rounds(results: list[Result]) -> str:
    """Each burst round's slowest answer: whether the tail is every round or a few, and in a
    slow round whether slash commands (no database write before their ack) were slow too."""
    rounds: list[dict] = []
    for r in sorted(results, key=lambda r: r.sent_at):
        # A round's requests leave within milliseconds; the next round --gap seconds later.
        if not rounds or r.sent_at - rounds[-1]["last"] > 0.2:
            rounds.append({"first": r.sent_at, "last": r.sent_at, "slash": 0.0, "view": 0.0})
        row = rounds[-1]
        row["last"] = r.sent_at
        row[r.kind] = max(row[r.kind], r.seconds * 1000)
    if not rounds:
        return "burst rounds: none"
    start = rounds[0]["first"]
    worst = sorted(rounds, key=lambda row: max(row["slash"], row["view"]))
    top = "; ".join(
        f"{max(row['slash'], row['view']):.0f} ms at {row['first'] - start:.0f} s "
        f"(slash {row['slash']:.0f}, view {row['view']:.0f})"
        for row in reversed(worst[-5:])
    )
    median = percentile([max(row["slash"], row["view"]) for row in worst], 50)
    return (
        f"burst rounds: {len(worst)}; slowest answer of a round: median {median:.0f} ms; "
        f"the 5 slowest rounds: {top}"
    )


# --------------------------------------------------------------------------- main


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per target (default 2000)")
    parser.add_argument("--concurrency", type=int, default=50, help="connections (default 50)")
    parser.add_argument("--warmup", type=int, help="unmeasured requests first (default 4 x C)")
    parser.add_argument("--quick", action="store_true", help="a short run: 400 requests")
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in a temp dir)")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated, in order (default {','.join(TARGETS)})",
    )
    parser.add_argument(
        "--patterns",
        default="burst,closed",
        help="load patterns, comma-separated: burst (C requests at once, a round every --gap "
        "seconds), closed (each connection sends again when answered); default burst,closed",
    )
    parser.add_argument(
        "--gap", type=float, default=1.0, help="seconds between burst rounds (default 1)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, SQLite)")
    args = parser.parse_args()
    if args.quick:
        args.requests = min(args.requests, 400)
    if args.warmup is None:
        args.warmup = 4 * args.concurrency
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.patterns = [p.strip() for p in args.patterns.split(",") if p.strip()]
    if not args.patterns or any(p not in PATTERNS for p in args.patterns):
        parser.error(f"patterns: choose from {', '.join(PATTERNS)}")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or args.requests < args.concurrency or args.concurrency < 1:
        parser.error(f"unknown targets {unknown}" if unknown else "need requests >= concurrency")

    # Ctrl-C and SIGTERM both unwind through the finally below, which stops every child.
    signal.signal(signal.SIGTERM, _interrupt)
    load_start = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="closeloop-ackbench-"))
    children = Children(workdir)
    drop_database = None
    outcomes: list[Outcome] = []
    try:
        if args.database_url:
            db_url, drop_database = throwaway_postgres(args.database_url)
            backend = "PostgreSQL (throwaway database)"
        else:
            db_url = f"sqlite:///{workdir / 'closeloop.db'}"
            backend = "SQLite (file in a temp dir)"
        secret = secrets.token_hex(16)
        start_role(children, "fake-slack", [str(args.concurrency)])
        slack_proc = children.procs["role-fake-slack"]
        slack_url = slack_proc.ready_line  # type: ignore[attr-defined]
        env = closeloop_env(slack_url, db_url, secret, workdir)
        print(f"seeding: {args.concurrency} reps, closeloop prompt --now, tick ...", flush=True)
        prompts = seed_prompts(env, db_url, args.concurrency)
        payloads = Payloads(prompts)
        for target in targets:
            print(f"measuring {target} ...", flush=True)
            outcomes.append(
                bench_target(
                    target,
                    children,
                    args=args,
                    secret=secret,
                    payloads=payloads,
                    slack_url=slack_url,
                    slack_pgid=slack_proc.pid,
                    env=env,
                    db_url=db_url,
                )
            )
        report(outcomes, args, backend, load_start)
        # The reference servers' errors are figures; Closeloop's are failures.
        mine = [o for o in outcomes if o.target == "closeloop"]
        failed = any(not o.verified or not all(map(acked, o.results)) for o in mine)
        return 1 if failed else 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    except Exception as err:
        print(f"ack_bench: {err}", file=sys.stderr)
        for name in list(children.procs):
            tail = children.log_tail(name, 15)
            if tail:
                print(f"--- {name} log (last lines) ---\n{tail}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        children.stop_all()
        if drop_database:
            drop_database()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ROLES:
        ROLES[sys.argv[1]](sys.argv[2:])
    else:
        sys.exit(main())
