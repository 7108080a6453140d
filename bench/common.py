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


def jvm_cpu_seconds(spark) -> float | None:
    """CPU seconds the local Spark driver JVM has used so far (Linux), or ``None`` (Spark Connect, no /proc).

    With a ``local[*]`` master every task runs in that JVM, so the CPU seconds of a timed call are a second measure
    of its work that other processes on a shared machine disturb less than wall time.
    """
    try:
        pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except Exception:
        return None


def best_of_with_cpu(fn: Callable[[int], None], spark, repeats: int = REPEATS) -> tuple[float, float | None]:
    """Minimum wall time and minimum driver-JVM CPU time (see :func:`jvm_cpu_seconds`) over ``repeats`` runs."""
    walls: list[float] = []
    cpus: list[float] = []
    for i in range(repeats):
        c0 = jvm_cpu_seconds(spark)
        t0 = time.perf_counter()
        fn(i)
        walls.append(time.perf_counter() - t0)
        c1 = jvm_cpu_seconds(spark)
        if c0 is not None and c1 is not None:
            cpus.append(c1 - c0)
    return min(walls), (min(cpus) if cpus else None)
