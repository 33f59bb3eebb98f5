"""Benchmark: ``closeloop import winloss`` (or ``import leads``) of N rows, Closeloop format.

Generates N rows (default 100,000) as ``closeloop export winloss`` (``--kind leads``: as
``closeloop export leads``) writes them, then runs ``python -m bot import KIND FILE`` as an
operator would, once into a fresh SQLite file and
once into a fresh PostgreSQL database created beside the one given and dropped afterwards.
Prints the wall time and rows a second for each (the target is 100,000 rows in under 20 s).

    python bench/import_bench.py                     # SQLite, and PostgreSQL at the URL below
    python bench/import_bench.py --rows 20000 --database-url postgresql://postgres@127.0.0.1/test
    python bench/import_bench.py --no-postgres
    python bench/import_bench.py --kind leads        # 100,000 leads, 4 in 5 rated
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, throwaway_database  # noqa: E402

from bot.services.csvio import WINLOSS_COLUMNS  # noqa: E402
from bot.services.leadio import LEAD_COLUMNS  # noqa: E402

TARGET_SECONDS = 20.0
TARGET_ROWS = 100_000
OUTCOMES = ["won", "lost", "lost", "no_decision"]
CATEGORIES = ["Price", "Product gap", "Timing or budget", "Other", ""]
COMPETITORS = [f"Competitor {c}" for c in "ABCDEFGHIJKLMNOPQRST"] + ["", "", ""]
OWNERS = [f"U{n:06d}" for n in range(500)] + [f"rep{n}@example.com" for n in range(500)]
REASONS = [
    "They said the security review would take another quarter",
    "The CFO could not justify a second tool next to the one they have",
    "Our live ROI demo won the room in the first call",
    "They went quiet after procurement asked for a discount",
]


def generate(path: Path, rows: int, *, seed: int = 7) -> None:
    """``rows`` distinct deals closed over the last 300 days, in export's format."""
    rnd = random.Random(seed)
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(WINLOSS_COLUMNS)
        for n in range(rows):
            closed = start + timedelta(minutes=rnd.randrange(300 * 24 * 60))
            logged = closed + timedelta(hours=rnd.randrange(1, 60))
            writer.writerow(
                [
                    f"CRM-{n}",
                    f"Deal {n}",
                    rnd.choice(OUTCOMES),
                    closed.isoformat().replace("+00:00", "Z"),
                    logged.isoformat().replace("+00:00", "Z"),
                    rnd.choice(REASONS),
                    rnd.choice(CATEGORIES),
                    rnd.choice(COMPETITORS),
                    "Lead with the ROI calculator" if n % 3 else "",
                    f"{rnd.randrange(1000, 200000)}.{rnd.randrange(100):02d}" if n % 4 else "",
                    "Webinar" if n % 5 == 0 else "",
                    rnd.choice(OWNERS),
                ]
            )


LEAD_STATUSES = ["new", "accepted", "accepted", "not_ready", "rejected"]
LEAD_REASONS = ["Bad fit: company size", "Bad fit: no budget", "Bad data", "Duplicate"]
LEAD_SOURCES = ["Webinar", "Paid search", "Trade show", "Referral", "Content download"]


def generate_leads(path: Path, rows: int, *, seed: int = 7) -> None:
    """``rows`` distinct leads handed over in the last 300 days, as export leads writes them."""
    rnd = random.Random(seed)
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)

    def iso(value: datetime | None) -> str:
        return value.isoformat().replace("+00:00", "Z") if value else ""

    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(LEAD_COLUMNS)
        for n in range(rows):
            handed = start + timedelta(minutes=rnd.randrange(300 * 24 * 60))
            due = handed + timedelta(hours=24)
            status = rnd.choice(LEAD_STATUSES)
            rated = handed + timedelta(hours=rnd.randrange(1, 48)) if status != "new" else None
            owner = rnd.choice(OWNERS)
            writer.writerow(
                [
                    f"hubspot:contact:{n}",
                    f"Prospect {n}",
                    f"prospect{n}@example.org",
                    f"Company {n % 5000}",
                    "Head of Operations" if n % 2 else "",
                    rnd.choice(LEAD_SOURCES),
                    "Q3 webinar series" if n % 3 == 0 else "",
                    "Downloaded the pricing guide twice" if n % 4 == 0 else "",
                    owner,
                    owner if "@" in owner else "",
                    "",
                    iso(handed),
                    iso(due),
                    "",
                    status,
                    rnd.choice(LEAD_REASONS) if status == "rejected" else "",
                    "Call back in spring" if status == "not_ready" else "",
                    (owner if owner.startswith("U") else "import") if rated else "",
                    iso(rated),
                    "",
                    iso(rated),
                    ("yes" if rated <= due else "no") if rated else "",
                ]
            )


def run_import(database_url: str, path: Path, kind: str = "winloss") -> tuple[float, float]:
    """Wall seconds ``closeloop import winloss`` took (the process as a whole, migrations
    too) and the CPU seconds it used (the database server's are not counted)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CLOSELOOP_ENV_FILE": os.devnull,
        "DATABASE_URL": database_url,
        "PYTHONPATH": str(ROOT),
    }
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bot", "import", kind, str(path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - began
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"import failed ({done.returncode}):\n{done.stderr[-2000:]}")
    print(f"  {done.stdout.strip()}")
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=TARGET_ROWS)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL URL; the benchmark creates and drops a database beside it",
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--kind", choices=["winloss", "leads"], default="winloss")
    args = parser.parse_args()
    target = TARGET_SECONDS * args.rows / TARGET_ROWS
    with tempfile.TemporaryDirectory(prefix="closeloop-import-bench-") as tmp:
        path = Path(tmp) / f"{args.kind}.csv"
        (generate_leads if args.kind == "leads" else generate)(path, args.rows)
        print(f"{args.rows} rows, {path.stat().st_size / 1e6:.1f} MB; target under {target:.1f} s")
        backends = [("sqlite", None)]
        if not args.no_postgres:
            backends.append(("postgresql", args.database_url))
        for name, url in backends:
            with throwaway_database(url) as db_url:
                seconds, cpu = run_import(db_url, path, args.kind)
            verdict = "met" if seconds < target else "MISSED"
            print(
                f"{name}: {seconds:.1f} s, {args.rows / seconds:,.0f} rows/s "
                f"(target {target:.1f} s: {verdict}); the import process used {cpu:.1f} s "
                f"of CPU; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
            )


if __name__ == "__main__":
    main()
