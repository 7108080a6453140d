"""PipelineDP's Spark (RDD) backend on the dp_aggregate benchmark's data, against a plain group-by in the same run.

Runs in an interpreter that has ``pyspark`` and ``pipeline-dp`` (0.3.x); it imports nothing from privstage, so it
also runs from a separate virtual environment. ``bench/bench_dp_aggregate.py`` starts it as a subprocess (its own
Spark driver: PipelineDP uses ``df.rdd`` and so needs a classic session) with the Parquet file it wrote::

    python -m bench.bench_pipelinedp --data /tmp/privstage-bench-dp_aggregate/visits \\
        --unit patient_id --group dx --value cost --max-groups 4 --max-rows 2 --lower 0 --upper 500

Query: DP COUNT and SUM per group over the declared public groups (every distinct group of the data, read once before
timing), each unit bounded to ``--max-groups`` groups and ``--max-rows`` rows per group, values clamped to
``[--lower, --upper]``, Laplace noise, ε=1 (δ=0) split by PipelineDP's NaiveBudgetAccountant. The baseline is the same
plain Spark group-by count+sum as in bench_dp_aggregate, timed in this process. Prints one BENCH line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _session():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return (
        SparkSession.builder.master(os.environ.get("BENCH_MASTER", "local[*]"))
        .appName("bench-pipelinedp")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", os.environ.get("BENCH_DRIVER_MEMORY", "6g"))
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.default.parallelism", os.environ.get("BENCH_PIPELINEDP_PARALLELISM", "8"))
        .getOrCreate()
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Parquet data written by bench_dp_aggregate")
    parser.add_argument("--unit", default="patient_id")
    parser.add_argument("--group", default="dx")
    parser.add_argument("--value", default="cost")
    parser.add_argument("--max-groups", type=int, default=4)
    parser.add_argument("--max-rows", type=int, default=2)
    parser.add_argument("--lower", type=float, default=0.0)
    parser.add_argument("--upper", type=float, default=500.0)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_PIPELINEDP_REPEATS", "1")))
    args = parser.parse_args(argv)

    import pipeline_dp
    from pyspark.sql import functions as F

    spark = _session()
    spark.sparkContext.setLogLevel("ERROR")
    data = spark.read.parquet(args.data)
    rows = data.count()
    public = sorted(r[0] for r in data.select(args.group).distinct().collect())  # declared up front, not timed
    data.write.format("noop").mode("overwrite").save()  # warm the file cache and the JVM

    def plain() -> object:
        return (
            spark.read.parquet(args.data)
            .groupBy(args.group)
            .agg(F.count(F.lit(1)).alias("n"), F.sum(args.value).alias("s"))
            .collect()
        )

    def pipelinedp() -> object:
        frame = spark.read.parquet(args.data).select(args.unit, args.group, args.value)
        accountant = pipeline_dp.NaiveBudgetAccountant(total_epsilon=args.epsilon, total_delta=0)
        engine = pipeline_dp.DPEngine(accountant, pipeline_dp.SparkRDDBackend(spark.sparkContext))
        params = pipeline_dp.AggregateParams(
            noise_kind=pipeline_dp.NoiseKind.LAPLACE,
            metrics=[pipeline_dp.Metrics.COUNT, pipeline_dp.Metrics.SUM],
            max_partitions_contributed=args.max_groups,
            max_contributions_per_partition=args.max_rows,
            min_value=args.lower,
            max_value=args.upper,
        )
        extractors = pipeline_dp.DataExtractors(
            privacy_id_extractor=lambda row: row[0],
            partition_extractor=lambda row: row[1],
            value_extractor=lambda row: row[2] if row[2] is not None else 0.0,
        )
        result = engine.aggregate(frame.rdd, params, extractors, public_partitions=public)
        accountant.compute_budgets()
        released = result.collect()
        if len(released) != len(public):
            raise RuntimeError(f"PipelineDP released {len(released)} groups, expected {len(public)}")
        return released

    # plain before and after, so that neither side profits from running later
    t_plain = _best_of(plain, 2)
    t_pdp = _best_of(pipelinedp, args.repeats)
    t_plain = min(t_plain, _best_of(plain, 1))

    line = (
        f"BENCH name=pipelinedp_dp_aggregate ratio={t_pdp / t_plain:.2f} baseline=plain_groupby rows={rows} "
        f"seconds={t_pdp:.2f} baseline_seconds={t_plain:.2f} groups={len(public)} "
        f"max_groups_per_unit={args.max_groups} max_rows_per_group={args.max_rows} "
        f"master={spark.sparkContext.master} pipeline_dp={pipeline_dp.__version__} repeats={args.repeats}"
    )
    print(line, flush=True)
    spark.stop()
    return line


if __name__ == "__main__":
    main()
