"""Benchmark: a 5,000-rep Friday fan-out against a rate-limited, misbehaving Slack; memory.

The production layout, as real processes: ``closeloop scheduler`` holds the scheduler role
(and so sends the outbox); ``closeloop prompt --now``, run beside it, queues the week's
prompt for every rep. The fake Slack (tests/fakeslack.py, on 127.0.0.1) enforces a
chat.postMessage limit (a token bucket: RATE a second, bursts of RATE) and answers a random
10% of calls with HTTP 429 (Retry-After: 1) or 500, which do not count against the limit.

Prints the wall time from the first to the last DM Slack accepted, against the least the
limit allows, lost and duplicate DMs, and the scheduler process's resident memory idle and
after the fan-out.

    python bench/fanout_bench.py                      # SQLite in a temporary directory
    python bench/fanout_bench.py --database-url postgresql://postgres@127.0.0.1:5432/test
    python bench/fanout_bench.py --reps 1000 --rate 200   # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, memory_kib, throwaway_database  # noqa: E402

from bot.db import make_engine, make_session_factory, session_scope  # noqa: E402
from bot.delivery.outbox import MARK  # noqa: E402
from bot.services import outbox as outbox_svc  # noqa: E402
from tests.conftest import BOT_TOKEN, SIGNING_SECRET  # noqa: E402
from tests.fakeslack import FakeSlack  # noqa: E402
from tests.harness import seed_sales_roster  # noqa: E402


def _env(slack: FakeSlack, url: str, rate: float, workers: int) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CLOSELOOP_ENV_FILE": "/nonexistent.env",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.url,
        "DATABASE_URL": url,
        "FEEDBACK_CHANNEL": "CMKTG",
        "SALES_USERGROUP": "SSALES",
        "MARKETING_USERS": "UMIA",
        "SLACK_POST_RATE": str(rate),
        "OUTBOX_WORKERS": str(workers),
        "LOG_LEVEL": "ERROR",
        "CLOSELOOP_SCHEDULER_POLL": "1",
    }


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"fanout_bench: timed out waiting for {what}")
        time.sleep(0.05)


def run(args) -> dict:
    reps = [f"UREP{n:05d}" for n in range(args.reps)]
    slack = FakeSlack(bot_token=BOT_TOKEN).start()
    scheduler = None
    try:
        slack.add_channel("CMKTG", name="marketing-feedback")
        with throwaway_database(args.database_url) as url:
            engine = make_engine(url)
            factory = make_session_factory(engine)
            seed_sales_roster(slack, factory, reps)
            slack.set_usergroup("SSALES", [])  # the scheduler starts with nobody to prompt
            env = _env(slack, url, args.rate, args.workers)
            scheduler = subprocess.Popen(
                [sys.executable, "-m", "bot", "scheduler"], env=env, cwd=ROOT
            )
            _wait(lambda: slack.calls_to("usergroups.users.list"), 60, "the scheduler's tick")
            time.sleep(args.idle_seconds)
            idle = memory_kib(scheduler.pid)

            slack.set_usergroup("SSALES", reps)
            slack.limit_rate("chat.postMessage", per_second=args.rate, burst=int(args.rate))
            slack.inject_faults(
                "chat.postMessage", fraction=args.faults, seed=args.seed, statuses=(429, 500)
            )
            accepted: list[float] = []
            lock = threading.Lock()

            def on_post(_body) -> None:
                with lock:
                    accepted.append(time.monotonic())

            slack.after_success("chat.postMessage", on_post)
            queued = subprocess.run(
                [sys.executable, "-m", "bot", "prompt", "--now"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if queued.returncode != 0:
                raise SystemExit(f"fanout_bench: prompt --now failed: {queued.stderr[-2000:]}")
            _wait(lambda: len(accepted) >= args.reps, args.reps / args.rate * 3 + 60, "the DMs")
            time.sleep(2)  # anything arriving late would be a duplicate
            after = memory_kib(scheduler.pid)
            with session_scope(factory) as session:
                states = outbox_svc.counts(session)
            engine.dispose()
    finally:
        if scheduler is not None:
            scheduler.send_signal(signal.SIGTERM)
            try:
                scheduler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                scheduler.kill()
        slack.stop()
    per_rep: Counter = Counter()
    attempts = Counter()
    for call in slack.calls_to("chat.postMessage", include_failed=True):
        if (call.params.get("metadata") or {}).get("event_type") == MARK:
            attempts[call.status] += 1
            if call.status == 200 and (call.response or {}).get("ok"):
                per_rep[call.params["channel"]] += 1
    wall = accepted[-1] - accepted[0]
    minimum = (args.reps - int(args.rate)) / args.rate  # the first burst is free
    return {
        "wall": wall,
        "minimum": minimum,
        "lost": sum(1 for rep in reps if per_rep[rep] == 0),
        "duplicates": sum(n - 1 for n in per_rep.values() if n > 1),
        "attempts": dict(sorted(attempts.items())),
        "over_limit_429": slack.rate_limited,
        "states": states,
        "idle": idle,
        "after": after,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in a temp dir)")
    parser.add_argument("--reps", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=100.0, help="chat.postMessage a second")
    parser.add_argument("--faults", type=float, default=0.10, help="share answered 429/500")
    parser.add_argument("--workers", type=int, default=8, help="OUTBOX_WORKERS")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    r = run(args)
    backend = "postgresql" if args.database_url else "sqlite"
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {backend}")
    print(
        f"fan-out: {args.reps} reps, limit {args.rate:g}/s (bursts of {int(args.rate)}), "
        f"{args.faults:.0%} of calls answered 429 or 500, OUTBOX_WORKERS={args.workers}"
    )
    print(
        f"wall time (first to last accepted DM): {r['wall']:.1f} s; least the limit allows: "
        f"{r['minimum']:.1f} s; over by {(r['wall'] / r['minimum'] - 1):.1%} (target: within 10%)"
    )
    print(f"lost: {r['lost']}, duplicates: {r['duplicates']}")
    print(
        f"chat.postMessage answers by HTTP status: {r['attempts']}; "
        f"refused for going over the limit: {r['over_limit_429']}"
    )
    print(f"outbox rows by state: {r['states']}")
    print(
        f"scheduler process memory: idle {r['idle']['VmRSS'] / 1024:.0f} MiB resident; after "
        f"the fan-out {r['after']['VmRSS'] / 1024:.0f} MiB (peak {r['after']['VmHWM'] / 1024:.0f}"
        " MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
