"""Shared benchmark plumbing: one Spark session, timing, the BENCH line."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROWS = int(os.environ.get("BENCH_ROWS", "10000000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))


def session():
    from privstage.spark import get_session

    return get_session(
        conf={
            "spark.master": os.environ.get("BENCH_MASTER", "local[*]"),
            "spark.ui.enabled": "false",
            "spark.driver.memory": os.environ.get("BENCH_DRIVER_MEMORY", "6g"),
            "spark.sql.shuffle.partitions": "8",
        }
    )


def workdir(name: str) -> Path:
    root = Path(os.environ.get("BENCH_DIR") or tempfile.gettempdir()) / f"privstage-bench-{name}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


def best_of(fn: Callable[[int], None], repeats: int = REPEATS) -> float:
    """Minimum wall time over ``repeats`` runs; ``fn`` gets the repetition index."""
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return min(times)


def report(name: str, seconds: float, baseline_name: str, baseline_seconds: float, rows: int, **extra: object) -> str:
    fields = " ".join(f"{k}={v}" for k, v in extra.items())
    line = (
        f"BENCH name={name} ratio={seconds / baseline_seconds:.2f} baseline={baseline_name} rows={rows} "
        f"seconds={seconds:.2f} baseline_seconds={baseline_seconds:.2f}" + (f" {fields}" if fields else "")
    )
    print(line, flush=True)
    return line
