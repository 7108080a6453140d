"""pseudonymize: two columns of ROWS rows pseudonymized and written as Parquet, against a plain
Parquet write of the same rows in the same run (target ratio <= 1.8)."""

from __future__ import annotations

import base64
import os

from bench.common import ROWS, best_of, report, session, workdir


def run() -> list[str]:
    from privstage.engine import RunContext, run_pipeline
    from privstage.keys import EnvKeyProvider
    from privstage.sample_data import clinic_visits_spark
    from privstage.spec import PipelineSpec
    from privstage.stages import pseudonymize as ps

    spark = session()
    root = workdir("pseudonymize")
    source = str(root / "input")
    clinic_visits_spark(spark, ROWS).write.parquet(source)
    keys = EnvKeyProvider(environ={"PRIVSTAGE_KEY_BENCH_KEY": base64.b64encode(os.urandom(32)).decode()})
    spec = PipelineSpec.model_validate(
        {
            "name": "bench",
            "base_dir": str(root),
            "stages": [
                {
                    "name": "pseudo",
                    "kind": "pseudonymize",
                    "input": {"path": source},
                    "output": {"path": str(root / "guarded")},
                    "columns": [
                        {"column": "patient_id", "key_id": "bench-key"},
                        {"column": "ssn", "key_id": "bench-key"},
                    ],
                }
            ],
        }
    )
    stage = spec.stages[0]
    df = spark.read.parquet(source)
    plan = ps.plan(stage, df.schema, keys)
    spark.read.parquet(source).write.format("noop").mode("overwrite").save()  # warm the file cache and the JVM

    def plain(i: int) -> None:
        spark.read.parquet(source).write.mode("overwrite").parquet(str(root / f"plain{i}"))

    def pseudonymized(i: int, jvm: bool | None = None) -> None:
        out = ps.apply(spark.read.parquet(source), plan, spark=spark, jvm=jvm)
        out.write.mode("overwrite").parquet(str(root / f"pseudo{i}"))

    # interleave so that neither side profits from running later
    t_plain = best_of(plain)
    t_pseudo = best_of(pseudonymized)
    t_plain = min(t_plain, best_of(plain, 1))
    from privstage.jvm import udf_available

    impl = "jvm" if udf_available(spark) else "builtins"
    lines = [report("pseudonymize", t_pseudo, "plain_parquet_write", t_plain, ROWS, columns=2, impl=impl)]
    # the fallback used when a session was created without privstage's jar
    t_builtins = best_of(lambda i: pseudonymized(i, jvm=False), 1)
    lines.append(report("pseudonymize_builtins", t_builtins, "plain_parquet_write", t_plain, ROWS, columns=2))

    # the whole guarded stage through the engine (pre-guards, write, post-guards, commit)
    def guarded(_: int) -> None:
        run_pipeline(spec, spark=spark, keys=keys, progress=False, overwrite=True, context=RunContext("bench/pseudo"))

    t_guarded = best_of(guarded, 1)
    lines.append(report("pseudonymize_guarded", t_guarded, "plain_parquet_write", t_plain, ROWS, columns=2))
    return lines


if __name__ == "__main__":
    run()
