"""anonymize_k: k=5 over 4 quasi-identifiers with hierarchies (age band from date of birth, ZIP prefix,
sex, visit month) on ROWS rows, against one plain Spark group-by over the same four raw columns in the
same run. Both write to the ``noop`` sink, so the figures compare computation, not Parquet encoding.

The anonymize side is everything a release costs: the count-table pass, the lattice search, the
projection of every row with its chosen labels and the anti-join of suppressed classes, and the risk
report measured on the release (a second pass over the rows).
"""

from __future__ import annotations

import os
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
    lines = [line]
    single_machine = os.environ.get("BENCH_SINGLE_MACHINE_PYTHON")  # a venv with anjana (pins old pandas)
    if single_machine:
        lines.append(side_by_side(single_machine))
    return lines


_ANJANA = r"""
import json, sys, time
import pandas as pd
from anjana.anonymity import k_anonymity

data = pd.read_csv(sys.argv[1], dtype=str)
qis = ["age5", "zip3", "sex", "month"]
hier = {}
for qi in qis:
    levels = pd.read_csv(sys.argv[2] + "/" + qi + ".csv", dtype=str, header=None)
    hier[qi] = {i: levels[i].values for i in levels.columns}
t0 = time.perf_counter()
out = k_anonymity(data, [], qis, int(sys.argv[3]), float(sys.argv[4]), hier)
seconds = time.perf_counter() - t0
sizes = out.groupby(qis).size()
print(json.dumps({"seconds": seconds, "rows_out": int(len(out)), "dm_kept": int((sizes ** 2).sum()),
                  "min_class": int(sizes.min())}))
"""


def side_by_side(python: str, rows: int = 100_000, k: int = 5) -> str:
    """privstage against anjana (ARX-like full-domain k-anonymity in pandas) on the same lattice.

    Both start from the same level-0 values (5-year age band, ZIP3, sex, visit month) and the same
    hierarchies above them; information loss is the discernibility metric with suppression computed the
    same way on both outputs. anjana pins old numpy/pandas, so it runs in its own interpreter ``python``.
    """
    import json
    import subprocess

    import pandas as pd

    from privstage.anonymize import anonymize
    from privstage.sample_data import CLINIC_VISITS_SCHEMA, generate_clinic_visits_pandas

    spark = session()
    root = workdir("anonymize-side")
    visits = generate_clinic_visits_pandas(rows)
    ref = pd.Timestamp("2025-01-01").date()
    age = [ref.year - d.year - ((ref.month, ref.day) < (d.month, d.day)) for d in visits["date_of_birth"]]
    frame = pd.DataFrame(
        {
            "age5": [f"[{a // 5 * 5}, {a // 5 * 5 + 5})" for a in age],
            "zip3": [z[:3] + "**" for z in visits["zip_code"]],
            "sex": visits["sex"],
            "month": [d.strftime("%Y-%m") for d in visits["visit_date"]],
        }
    )
    frame.to_csv(root / "data.csv", index=False)
    (root / "h").mkdir()

    def band(a: int, width: int) -> str:
        return f"[{a // width * width}, {a // width * width + width})"

    def levels(name: str, first: list[str], *higher) -> None:
        table = pd.DataFrame({0: first, **{i + 1: [f(v) for v in first] for i, f in enumerate(higher)}})
        table.drop_duplicates().to_csv(root / "h" / f"{name}.csv", index=False, header=False)

    ages = sorted(set(age))
    age_table = pd.DataFrame({0: [band(a, 5) for a in ages], 1: [band(a, 10) for a in ages],
                              2: [band(a, 20) for a in ages], 3: ["*"] * len(ages)})  # fmt: skip
    age_table.drop_duplicates().to_csv(root / "h" / "age5.csv", index=False, header=False)
    levels("zip3", sorted(set(frame["zip3"])), lambda z: z[:2] + "***", lambda z: z[:1] + "****", lambda z: "*")
    levels("sex", ["F", "M", "X"], lambda v: "*")
    quarter = lambda m: f"{m[:4]}-Q{(int(m[5:]) - 1) // 3 + 1}"  # noqa: E731
    levels("month", sorted(set(frame["month"])), quarter, lambda m: m[:4], lambda m: "*")
    done = subprocess.run(
        [python, "-c", _ANJANA, str(root / "data.csv"), str(root / "h"), str(k), "2"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    theirs_dm = theirs["dm_kept"] + (rows - theirs["rows_out"]) * rows

    df = spark.createDataFrame(visits, CLINIC_VISITS_SCHEMA)
    t0 = time.perf_counter()
    result = anonymize(df, config(k), spark=spark)
    result.data.write.format("noop").mode("overwrite").save()
    ours = time.perf_counter() - t0
    rep = result.report
    return report(
        "anonymize_k_vs_anjana", ours, "anjana_k_anonymity", theirs["seconds"], rows, k=k,
        dm=rep.discernibility, anjana_dm=theirs_dm, suppressed=rep.suppressed_rows,
        anjana_suppressed=rows - theirs["rows_out"], min_class=rep.risk.min_class_size,
        anjana_min_class=theirs["min_class"],
    )  # fmt: skip


if __name__ == "__main__":
    run()
