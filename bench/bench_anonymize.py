"""anonymize_k: k=5 over 4 quasi-identifiers with hierarchies (age band from date of birth, ZIP prefix,
sex, visit month) on ROWS rows, against one plain Spark group-by over the same four raw columns in the
same run. Both write to the ``noop`` sink, so the figures compare computation, not Parquet encoding.

The anonymize side is everything a release costs: the count-table pass, the lattice search, the
projection of every row with its chosen labels and the anti-join of suppressed classes, and the risk
report measured on the release (a second pass over the rows).
"""

from __future__ import annotations

import time

from bench.common import ROWS, best_of, report, session, workdir

QIS = ("date_of_birth", "zip_code", "sex", "visit_date")


def config(k: int = 5, max_suppression: float = 0.02):
    from privstage.anonymize import AnonymizeConfig

    return AnonymizeConfig.model_validate(
        {
            "k": k,
            "max_suppression": max_suppression,
            "unlisted": "drop",
            "columns": [
                {"column": "date_of_birth", "action": "quasi_identifier", "output_column": "age_band",
                 "hierarchy": {"type": "age", "reference_date": "2025-01-01", "widths": [5, 10, 20]},
                 "min_level": 1},
                {"column": "zip_code", "action": "quasi_identifier", "hierarchy": {"type": "prefix", "keep": [3, 2, 1]},
                 "min_level": 1},
                {"column": "sex", "action": "quasi_identifier",
                 "hierarchy": {"type": "categorical", "values": {"F": ["*"], "M": ["*"], "X": ["*"]}}},
                {"column": "visit_date", "action": "quasi_identifier",
                 "hierarchy": {"type": "date", "units": ["month", "quarter", "year"]}, "min_level": 1},
                {"column": "diagnosis_code", "action": "keep"},
                {"column": "cost", "action": "keep"},
            ],
        }
    )  # fmt: skip


def run() -> list[str]:
    from privstage.anonymize import anonymize
    from privstage.sample_data import clinic_visits_spark

    spark = session()
    root = workdir("anonymize")
    source = str(root / "input")
    clinic_visits_spark(spark, ROWS).write.parquet(source)
    spark.read.parquet(source).write.format("noop").mode("overwrite").save()  # warm the file cache and the JVM
    cfg = config()

    def plain(_: int) -> None:
        spark.read.parquet(source).groupBy(*QIS).count().write.format("noop").mode("overwrite").save()

    results = []

    def anonymized(_: int) -> None:
        result = anonymize(spark.read.parquet(source), cfg, spark=spark)
        result.data.write.format("noop").mode("overwrite").save()
        results.append(result)

    t_plain = best_of(plain)
    t0 = time.perf_counter()
    anonymized(0)  # once: at 10M rows one run is minutes on a shared 2-core machine
    t_anon = time.perf_counter() - t0
    t_plain = min(t_plain, best_of(plain, 1))
    rep = results[-1].report
    levels = ",".join(f"{q}:{lv}" for q, lv in rep.levels.items())
    line = report(
        "anonymize_k", t_anon, "plain_groupby_4qi", t_plain, ROWS, k=5, qis=4,
        rows_per_s=int(ROWS / t_anon), levels=levels, suppressed=rep.suppressed_rows,
        min_class=rep.risk.min_class_size, classes=rep.risk.classes, count_table_rows=rep.count_table_rows,
        nodes=f"{rep.nodes_evaluated}/{rep.lattice_size}", search_jobs=rep.search_jobs, dm=rep.discernibility,
    )  # fmt: skip
    return [line]


if __name__ == "__main__":
    run()
