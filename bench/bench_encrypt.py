"""encrypt: two columns of ROWS clinic_visits rows encrypted at rest, against a plain Parquet write of the
same rows in the same run.

* ``encrypt_file``: Parquet Modular Encryption (ssn and name under column keys, the rest under the footer
  key, encrypted footer) through privstage's Java KMS client (target ratio <= 1.3).
* ``encrypt_field``: per-value AES-256-GCM of ssn and name with (dataset, column, visit_id) as AAD, in the
  JVM with a cached cipher (target ratio <= 2.5).
* ``encrypt_field_builtin``: the same columns through Spark's built-in ``aes_encrypt`` (GCM, with AAD), for
  comparison: it builds a cipher per row.
"""

from __future__ import annotations

import base64
import os

from bench.common import ROWS, best_of, report, session, workdir


def run() -> list[str]:
    from pyspark.sql import functions as F

    from privstage.crypto import envelope as env
    from privstage.crypto import field as field_mode
    from privstage.crypto import file as file_mode
    from privstage.jvm import field_udfs_available
    from privstage.keys import FileKeyProvider
    from privstage.sample_data import clinic_visits_spark

    spark = session()
    root = workdir("encrypt")
    source = str(root / "input")
    clinic_visits_spark(spark, ROWS).write.parquet(source)
    key_dir = root / "keys"
    key_dir.mkdir(mode=0o700)
    (key_dir / "bench-kek.v1").write_text(base64.b64encode(os.urandom(32)).decode())
    keys = FileKeyProvider(key_dir)
    columns = ["ssn", "name"]
    file_spec = env.parse_encryption_spec(
        {"mode": "file", "dataset": "bench", "kek_id": "bench-kek", "columns": columns}
    )
    field_spec = env.parse_encryption_spec(
        {"mode": "field", "dataset": "bench", "kek_id": "bench-kek", "columns": columns, "row_key": "visit_id"}
    )
    kd = file_mode.KeyDirectory.mounted(key_dir)
    field_keys = field_mode.plan_encrypt(field_spec, spark.read.parquet(source).schema, keys)
    spark.read.parquet(source).write.format("noop").mode("overwrite").save()  # warm the file cache and the JVM
    field_udfs_available(spark)  # registers and probes the JVM functions once per session

    def plain(i: int) -> None:
        spark.read.parquet(source).write.mode("overwrite").parquet(str(root / f"plain{i}"))

    def pme(i: int) -> None:
        options = file_mode.write_options(file_spec, kd)
        spark.read.parquet(source).write.options(**options).mode("overwrite").parquet(str(root / f"pme{i}"))

    def field(i: int) -> None:
        out = field_mode.encrypt(spark.read.parquet(source), field_keys, spark=spark)
        out.write.mode("overwrite").parquet(str(root / f"field{i}"))

    t_plain = best_of(plain)
    t_pme = best_of(pme)
    t_field = best_of(field)
    t_plain = min(t_plain, best_of(plain, 1))  # interleaved, so that neither side profits from running later
    lines = [
        report("encrypt_file", t_pme, "plain_parquet_write", t_plain, ROWS, columns=2, impl="pme_directory_kms"),
        report("encrypt_field", t_field, "plain_parquet_write", t_plain, ROWS, columns=2, impl="jvm_cached_gcm"),
    ]
    if os.environ.get("BENCH_BUILTIN", "1") == "1":
        # Spark's built-in, for comparison (the key as a literal here: a benchmark-only, throw-away key).
        hex_key = os.urandom(32).hex()

        def builtin(i: int) -> None:
            df = spark.read.parquet(source)
            for c in columns:
                aad = F.concat_ws("|", F.lit("bench"), F.lit(c), F.col("visit_id"))
                df = df.withColumn(
                    c,
                    F.aes_encrypt(F.col(c), F.unhex(F.lit(hex_key)), F.lit("GCM"), F.lit("DEFAULT"), F.lit(b""), aad),
                )
            df.write.mode("overwrite").parquet(str(root / f"builtin{i}"))

        t_builtin = best_of(builtin, 1)
        lines.append(report("encrypt_field_builtin", t_builtin, "plain_parquet_write", t_plain, ROWS, columns=2))
    return lines


if __name__ == "__main__":
    run()
