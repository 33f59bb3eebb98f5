"""Benchmark: the monthly digest on a year of data for 2,000 reps.

Generates about 100,000 weekly answers (2,000 reps x 52 weeks, most answered) and 30,000
closed deals with their win/loss entries, loop posts and acknowledgements, then times
``bot.services.digest.compute`` for one month. Prints the figures it measured.

    python bench/digest_bench.py                       # SQLite in a temporary file
    python bench/digest_bench.py --database-url postgresql://postgres@127.0.0.1:5432/test

On PostgreSQL it works in a throwaway database created beside the one given.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import throwaway_database  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from bot.db import make_engine, make_session_factory  # noqa: E402
from bot.models import (  # noqa: E402
    Acknowledgement,
    Competitor,
    Deal,
    FeedbackAnswer,
    LoopPost,
    Prompt,
    WinLossEntry,
)
from bot.services.digest import Month, compute  # noqa: E402

REPS = 2000
WEEKS = 52
DEALS = 30000
START = date(2025, 11, 3)  # a Monday; a year of weeks from here
CATEGORIES = [
    "Price",
    "Product gap",
    "Implementation / time to value",
    "Timing or budget",
    "Relationship / trust",
    "Incumbent or competitor",
    "Other",
]
PHRASES = [
    "security review",
    "too expensive",
    "already have sso",
    "migration effort",
    "missing integration",
    "budget freeze",
    "procurement delay",
    "roi unclear",
]


def batched(rows, size=5000):
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def generate(url: str, seed: int = 7) -> dict:
    rng = random.Random(seed)
    engine = make_engine(url)
    counts = {}
    t0 = time.perf_counter()
    with engine.begin() as conn:
        competitors = [
            {
                "id": i + 1,
                "key": f"competitor {i}",
                "name": f"Competitor {i}",
                "created_at": datetime(2025, 1, 1, tzinfo=UTC),
            }
            for i in range(25)
        ]
        conn.execute(insert(Competitor), competitors)
        prompts, answers, posts, acks = [], [], [], []
        post_id = ack_id = 0
        prompt_id = answer_id = 0
        for week in range(WEEKS):
            monday = START + timedelta(weeks=week)
            sent = datetime.combine(
                monday + timedelta(days=4), datetime.min.time(), UTC
            ) + timedelta(hours=15)
            for rep in range(REPS):
                prompt_id += 1
                roll = rng.random()
                status = "answered" if roll < 0.93 else "skipped" if roll < 0.96 else "missed"
                prompts.append(
                    {
                        "id": prompt_id,
                        "user_id": f"U{rep:05d}",
                        "week_start": monday,
                        "tz": "UTC",
                        "status": status,
                        "claimed_at": sent,
                        "sent_at": sent,
                        "dm_channel": f"D{rep:05d}",
                        "dm_ts": f"{sent.timestamp():.0f}.{rep:06d}",
                        "send_attempts": 0,
                        "remind_at": sent + timedelta(days=3),
                        "closes_at": sent + timedelta(days=7),
                        "answered_at": sent + timedelta(hours=2) if status != "missed" else None,
                    }
                )
                if status != "answered":
                    continue
                answer_id += 1
                answers.append(
                    {
                        "id": answer_id,
                        "prompt_id": prompt_id,
                        "user_id": f"U{rep:05d}",
                        "worked": "The ROI calculator opener landed with finance",
                        "fell_flat": f"The demo stalled on {rng.choice(PHRASES)} again",
                        "insight": f"Buyers keep asking about {rng.choice(PHRASES)}",
                        "campaign": None,
                        "source": "modal",
                        "created_at": sent,
                        "updated_at": sent + timedelta(hours=2),
                        "edit_count": 0,
                    }
                )
                post_id += 1
                posted = sent + timedelta(hours=2)
                acked = posted + timedelta(hours=rng.randint(1, 96)) if rng.random() < 0.7 else None
                posts.append(
                    {
                        "id": post_id,
                        "kind": "feedback",
                        "subject_id": answer_id,
                        "author_user_id": f"U{rep:05d}",
                        "channel": "CMKTG",
                        "ts": f"{posted.timestamp():.0f}.{post_id:06d}",
                        "needs_update": False,
                        "post_attempts": 1,
                        "created_at": posted,
                        "posted_at": posted,
                        "first_ack_at": acked,
                    }
                )
                if acked:
                    ack_id += 1
                    acks.append(
                        {
                            "id": ack_id,
                            "post_id": post_id,
                            "user_id": "UMKT",
                            "via": "reaction",
                            "note": None,
                            "dedup_key": "reaction:UMKT:white_check_mark",
                            "created_at": acked,
                            "thread_ts": "1.1",
                            "rep_notified_at": acked,
                            "notify_attempts": 1,
                        }
                    )
        deals, entries = [], []
        for n in range(DEALS):
            closed = datetime(2025, 11, 1, tzinfo=UTC) + timedelta(
                minutes=rng.randint(0, 365 * 24 * 60)
            )
            outcome = rng.choices(["won", "lost", "no_decision"], [0.4, 0.45, 0.15])[0]
            rep = rng.randrange(REPS)
            deals.append(
                {
                    "id": n + 1,
                    "external_id": f"CRM-{n}",
                    "name": f"Deal {n}",
                    "outcome": outcome,
                    "closed_at": closed,
                    "owner_user_id": f"U{rep:05d}",
                    "owner_email": None,
                    "amount": Decimal(rng.randint(1, 500) * 100),
                    "source": None,
                    "origin": "crm",
                    "received_at": closed,
                    "deadline_at": closed + timedelta(hours=24),
                    "nudge_attempts": 1,
                }
            )
            if rng.random() < 0.9:
                logged = closed + timedelta(hours=rng.randint(1, 40))
                entries.append(
                    {
                        "id": n + 1,
                        "deal_id": n + 1,
                        "outcome": outcome,
                        "reason": "They told us the migration would take their admins a quarter",
                        "reason_category": rng.choice(CATEGORIES),
                        "competitor_id": rng.choice([None, *range(1, 26)]),
                        "insight": "Lead with the migration plan",
                        "logged_at": logged,
                        "on_time": logged <= closed + timedelta(hours=24),
                        "author_user_id": f"U{rep:05d}",
                        "edit_count": 0,
                    }
                )
                post_id += 1
                acked = logged + timedelta(hours=rng.randint(1, 72)) if rng.random() < 0.6 else None
                posts.append(
                    {
                        "id": post_id,
                        "kind": "winloss",
                        "subject_id": n + 1,
                        "author_user_id": f"U{rep:05d}",
                        "channel": "CWIN",
                        "ts": f"{logged.timestamp():.0f}.{post_id:06d}",
                        "needs_update": False,
                        "post_attempts": 1,
                        "created_at": logged,
                        "posted_at": logged,
                        "first_ack_at": acked,
                    }
                )
        for table, rows in (
            (Prompt, prompts),
            (FeedbackAnswer, answers),
            (Deal, deals),
            (WinLossEntry, entries),
            (LoopPost, posts),
            (Acknowledgement, acks),
        ):
            for chunk in batched(rows):
                conn.execute(insert(table), chunk)
            counts[table.__tablename__] = len(rows)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    counts["generate_seconds"] = round(time.perf_counter() - t0, 1)
    engine.dispose()
    return counts


def measure(url: str, runs: int = 5) -> list[float]:
    engine = make_engine(url)
    factory = make_session_factory(engine)
    timings = []
    now = datetime(2026, 11, 2, 9, tzinfo=UTC)
    for _ in range(runs):
        with factory() as session:
            t0 = time.perf_counter()
            figures = compute(session, month=Month(2026, 10), tz=ZoneInfo("UTC"), now=now)
            timings.append(time.perf_counter() - t0)
    engine.dispose()
    assert figures["wins"] > 0 and figures["feedback"]["prompted"] > 0
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in a temp dir)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with throwaway_database(args.database_url) as url:
        counts = generate(url)
        timings = measure(url, args.runs)
    backend = "postgresql" if args.database_url else "sqlite"
    print(f"backend: {backend}")
    print("rows: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    print(
        f"digest for 2026-10 over {args.runs} runs: "
        f"median {statistics.median(timings) * 1000:.0f} ms, "
        f"max {max(timings) * 1000:.0f} ms (target: under 1000 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
