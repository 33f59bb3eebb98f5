"""What the benchmarks share: a throwaway database, process memory, percentiles."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@contextmanager
def throwaway_database(database_url: str | None) -> Iterator[str]:
    """A migrated, empty database: SQLite in a temporary directory, or (given a PostgreSQL
    URL) a new database beside that one, dropped afterwards."""
    from bot import migrate
    from tests.conftest import postgres_database

    if not database_url:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='closeloop-bench-')}/bench.db"
        migrate.upgrade(url)
        yield url
        return
    with postgres_database(database_url, prefix="closeloop_bench") as url:
        migrate.upgrade(url)
        yield url


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in KiB (Linux)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]
