"""GET /metrics: Prometheus's text format, what Closeloop answered and sent, the outbox's
depth, and the figures of every gunicorn worker added up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from bot.db import session_scope
from bot.services import outbox as outbox_svc
from tests.harness import tick
from tests.test_cli import _free_port
from tests.test_loop_scenario import FRI_1500_UTC


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels without pid) -> value, summed over processes."""
    found: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))
            found[(s.name, labels)] = found.get((s.name, labels), 0.0) + s.value
    return found


def scrape(h) -> dict[tuple[str, tuple], float]:
    reply = h.request("/metrics", method="GET", signed=False)
    assert reply.status == 200
    return samples(reply.body)


def test_metrics_count_requests_sends_and_the_outbox(harness):
    h, clock = harness, harness.clock
    requests = ("closeloop_slack_requests_total", (("kind", "command"), ("status", "200")))
    sent = ("closeloop_outbox_sends_total", (("result", "sent"),))
    pending = ("closeloop_outbox_messages", (("state", "pending"),))
    before = scrape(h)
    assert before[pending] == 0 and ("closeloop_outbox_oldest_pending_seconds", ()) in before
    clock.set(FRI_1500_UTC)
    tick(h.rt)  # Ana's prompt, sent
    h.command("UANA")  # /closeloop: answered 200
    with session_scope(h.rt.session_factory) as s:  # a message waiting
        outbox_svc.enqueue(s, key="k1", kind="notice", channel="UANA", text="t", now=clock())
    clock.advance(seconds=90)
    after = scrape(h)
    assert after[requests] - before.get(requests, 0) == 1
    assert after[sent] - before.get(sent, 0) >= 1
    assert after[pending] == 1
    assert after[("closeloop_outbox_oldest_pending_seconds", ())] == 90
    acks = ("closeloop_slack_ack_seconds_count", ())
    assert after[acks] - before.get(acks, 0) == 1


def test_every_gunicorn_worker_is_counted_in_any_scrape(cli_env):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        env={**cli_env, "PORT": str(port), "WEB_CONCURRENCY": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        answered = 0
        while answered == 0:
            try:
                # A probe given up on while a booting worker still answers it would be
                # counted by the server and not here: wait for each probe's answer.
                with urllib.request.urlopen(base + "/healthz", timeout=20):
                    answered = 1
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.2)
        for _ in range(29):  # a new connection each: the kernel spreads them over the workers
            with urllib.request.urlopen(base + "/healthz", timeout=5):
                answered += 1
        healthz = ("closeloop_slack_requests_total", (("kind", "healthz"), ("status", "200")))
        role = ("closeloop_scheduler_role", ())
        deadline = time.monotonic() + 20
        for _ in range(6):  # whichever worker answers the scrape, it counts all of them
            with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
                figures = samples(resp.read().decode())
            assert figures[healthz] == answered
            while figures[role] != 1:  # one process holds the role (it takes a moment)
                assert time.monotonic() < deadline, figures[role]
                time.sleep(0.5)
                with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
                    figures = samples(resp.read().decode())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
