"""dp_aggregate: bounded DP count and sum per group against a plain Spark group-by of the same Parquet data, in the
same run (target ratio <= 6).

Data (written once): ROWS visits, about ROWS/10 privacy units with skewed multiplicity (unit ``floor(u²·UNITS)`` for a
uniform ``u``: the most active unit has about ROWS/1000 rows, the least active a handful), 1000 groups (``dx``), a cost
in [-50, 550] with a declared range of [0, 500], and two columns the aggregation does not use.

Timed, best of BENCH_REPEATS, plain and dp interleaved:

* ``plain_groupby``: ``groupBy(dx).agg(count, sum(cost)).collect()``;
* ``dp_aggregate``: what the stage runs in Spark and on the driver: :func:`bound_contributions` (4 groups per unit,
  2 rows per group, carrying only the cost), :func:`exact_aggregates`, :func:`with_public_groups` over the declared
  1000 groups, and geometric noise on every released count and fixed-point sum;
* ``dp_aggregate_all_columns``: the same without ``columns=`` (every input column crosses the shuffle and is hashed);
* ``dp_shuffle_floor``: no bounding, only the shuffle by unit and the two-level exact aggregation (what any plan with
  one shuffle by unit pays).

Each BENCH line also carries ``cpu_ratio``: the same ratio in CPU seconds of the local Spark JVM, which other
processes on a shared machine disturb less than wall time. Finally PipelineDP's Spark backend runs on the same file in
its own process (see bench/bench_pipelinedp.py) when ``PRIVSTAGE_PIPELINEDP_PYTHON`` names an interpreter that has
``pipeline-dp`` or the current one has it (``pip install -c constraints.txt -e '.[bench]'``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from bench.common import REPEATS, ROWS, best_of_with_cpu, report, session, workdir

GROUPS = int(os.environ.get("BENCH_DP_GROUPS", "1000"))
UNITS = int(os.environ.get("BENCH_DP_UNITS", str(max(ROWS // 10, 1))))
MAX_GROUPS, MAX_ROWS = 4, 2
LOWER, UPPER, SCALE = 0, 500, 100
EPSILON = 1.0


def generate(spark, rows: int, units: int, groups: int):
    """The benchmark's visits: ``patient_id``, ``dx``, ``cost``, ``visit_id``, ``visit_date`` (deterministic)."""
    from pyspark.sql import functions as F

    u = F.rand(2026)
    return spark.range(rows).select(
        F.format_string("p%08d", F.floor(u * u * units).cast("long")).alias("patient_id"),
        F.format_string("dx%04d", F.pmod(F.xxhash64(F.col("id"), F.lit(7)), F.lit(groups))).alias("dx"),
        F.round(F.rand(11) * 600 - 50, 2).alias("cost"),
        F.col("id").alias("visit_id"),
        F.date_add(F.lit("2020-01-01").cast("date"), (F.rand(12) * 2000).cast("int")).alias("visit_date"),
    )


def _pipelinedp_python() -> str | None:
    configured = os.environ.get("PRIVSTAGE_PIPELINEDP_PYTHON")
    if configured:
        return configured
    return sys.executable if importlib.util.find_spec("pipeline_dp") is not None else None


def _run_pipelinedp(source: str, our_ratio: float) -> list[str]:
    python = _pipelinedp_python()
    if python is None:
        print(
            "BENCH-SKIPPED name=pipelinedp_dp_aggregate reason=pipeline-dp not installed. Either install it beside "
            "the stack (pip install -c constraints.txt -e '.[bench]') or in its own venv: python3 -m venv "
            "/work/pdp-venv && /work/pdp-venv/bin/pip install -c constraints.txt pyspark==4.3.0 pipeline-dp pyarrow "
            "pandas; then export PRIVSTAGE_PIPELINEDP_PYTHON=/work/pdp-venv/bin/python",
            flush=True,
        )
        return []
    script = Path(__file__).with_name("bench_pipelinedp.py")
    args = [
        python,
        str(script),
        "--data",
        source,
        "--unit",
        "patient_id",
        "--group",
        "dx",
        "--value",
        "cost",
        "--max-groups",
        str(MAX_GROUPS),
        "--max-rows",
        str(MAX_ROWS),
        "--lower",
        str(LOWER),
        "--upper",
        str(UPPER),
        "--epsilon",
        str(EPSILON),
    ]
    env = {**os.environ, "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or "").strip().splitlines()[-5:]
        print(f"BENCH-FAILED name=pipelinedp_dp_aggregate exit={done.returncode} stderr_tail={tail}", flush=True)
        return []
    for line in lines:
        print(line, flush=True)
    pdp_ratio = float(lines[0].split("ratio=")[1].split()[0])
    print(
        f"# PipelineDP / dp_aggregate = {pdp_ratio / our_ratio:.1f} (each against the plain group-by of its own "
        f"process: {pdp_ratio:.2f} vs {our_ratio:.2f})",
        flush=True,
    )
    return lines


def run() -> list[str]:
    from pyspark.sql import functions as F

    from privstage.dp.bounding import bound_contributions, exact_aggregates, sensitivities, with_public_groups
    from privstage.dp.mechanisms import integer_noise

    spark = session()
    root = workdir("dp_aggregate")
    source = str(root / "visits")
    warmup = str(root / "warmup")
    generate(spark, ROWS, UNITS, GROUPS).write.parquet(source)
    generate(spark, max(ROWS // 100, 10_000), max(UNITS // 100, 100), GROUPS).write.parquet(warmup)
    public = [(f"dx{g:04d}",) for g in range(GROUPS)]  # declared, not read from the data
    sens = sensitivities(MAX_GROUPS, MAX_ROWS, LOWER, UPPER, SCALE)
    spark.read.parquet(source).write.format("noop").mode("overwrite").save()  # warm the file cache and the JVM

    def plain(_: int, path: str = source) -> None:
        spark.read.parquet(path).groupBy("dx").agg(F.count(F.lit(1)), F.sum("cost")).collect()

    def dp(_: int, columns: list[str] | None = ["cost"], path: str = source) -> None:  # noqa: B006 - read only
        bounded = bound_contributions(
            spark.read.parquet(path),
            privacy_unit="patient_id",
            group_by=["dx"],
            max_groups_per_unit=MAX_GROUPS,
            max_rows_per_group=MAX_ROWS,
            columns=columns,
        )
        aggs = exact_aggregates(
            bounded,
            group_by=["dx"],
            privacy_unit="patient_id",
            value_column="cost",
            lower=LOWER,
            upper=UPPER,
            scale=SCALE,
        )
        released = with_public_groups(aggs.frame, public, group_by=["dx"]).collect()
        count_noise = integer_noise("geometric", epsilon=EPSILON / 2, sensitivity=sens["count"]["l1"])
        sum_noise = integer_noise("geometric", epsilon=EPSILON / 2, sensitivity=sens["sum_fp"]["l1"])
        count_noise.add_many([r["count"] for r in released], quantity="counts")
        sum_noise.add_many([int(r["sum_fp"]) for r in released], quantity="sums")
        if len(released) != GROUPS:
            raise RuntimeError(f"released {len(released)} groups, expected {GROUPS}")

    def shuffle_floor(_: int) -> None:
        frame = spark.read.parquet(source).select("patient_id", "dx", "cost").repartition("patient_id")
        fixed = F.round(F.least(F.greatest(F.col("cost"), F.lit(LOWER)), F.lit(UPPER)) * SCALE).cast("long")
        level1 = frame.groupBy("patient_id", "dx").agg(F.count(F.lit(1)).alias("c"), F.sum(fixed).alias("s"))
        level1.groupBy("dx").agg(F.sum("c"), F.count(F.lit(1)), F.sum("s")).collect()

    walls: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}

    def timed(name: str, fn, i: int) -> None:
        wall, cpu = best_of_with_cpu(lambda _: fn(i), spark, 1)
        walls.setdefault(name, []).append(wall)
        if cpu is not None:
            cpus.setdefault(name, []).append(cpu)

    plain(0, warmup)  # JIT and code generation warm-up on a small file of the same shape (not timed)
    dp(0, path=warmup)
    # interleave plain and dp so that neither side profits from running later or from a quieter moment
    timed("plain", plain, 0)
    for i in range(REPEATS):
        timed("dp", dp, i)
        timed("plain", plain, i)
    timed("all_columns", lambda i: dp(i, columns=None), 0)
    timed("floor", shuffle_floor, 0)
    timed("plain", plain, 0)
    t_plain = min(walls["plain"])

    def extra(name: str) -> dict[str, object]:
        if name not in cpus or "plain" not in cpus:
            return {"cpu_ratio": "n/a"}
        return {"cpu_ratio": f"{min(cpus[name]) / min(cpus['plain']):.2f}"}

    common = {
        "groups": GROUPS,
        "units": UNITS,
        "max_groups_per_unit": MAX_GROUPS,
        "max_rows_per_group": MAX_ROWS,
        "master": spark.sparkContext.master,
        "repeats": REPEATS,
    }
    names = {"dp": "dp_aggregate", "all_columns": "dp_aggregate_all_columns", "floor": "dp_shuffle_floor"}
    lines = [
        report(bench, min(walls[key]), "plain_groupby", t_plain, ROWS, **extra(key), **common)
        for key, bench in names.items()
    ]
    lines += _run_pipelinedp(source, min(walls["dp"]) / t_plain)
    return lines


if __name__ == "__main__":
    run()
