"""The synthetic clinic-visits generators: determinism, schema, per-patient consistency, PII shapes, writes."""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from privstage.errors import SpecError
from privstage.sample_data import (
    CLINIC_VISITS_SCHEMA,
    clinic_visits_spark,
    generate_clinic_visits_pandas,
    write_clinic_visits,
)

COLUMNS = [part.split()[0] for part in CLINIC_VISITS_SCHEMA.split(", ")]
# Valid-looking SSN: area not 000, 666 or 9xx; group not 00; serial not 0000 (Python and Java regex alike).
SSN_PATTERN = r"^(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}$"
PATIENT_COLUMNS = ["name", "email", "ssn", "date_of_birth", "zip_code", "sex"]
EXAMPLE_DOMAINS = ("example.com", "example.org", "example.net")
SPARK_ROWS = 50_000


@pytest.fixture(scope="module")
def schema(spark: SparkSession) -> StructType:
    return StructType.fromDDL(CLINIC_VISITS_SCHEMA)


@pytest.fixture(scope="module")
def visits() -> pd.DataFrame:
    return generate_clinic_visits_pandas(5000)


@pytest.fixture(scope="module")
def patients(visits: pd.DataFrame) -> pd.DataFrame:
    """One row per patient (the generator keeps patient attributes identical across visits)."""
    return visits.drop_duplicates("patient_id")


@pytest.fixture(scope="module")
def spark_visits(spark: SparkSession) -> Iterator[DataFrame]:
    frame = clinic_visits_spark(spark, SPARK_ROWS).cache()
    yield frame
    frame.unpersist()


def digest(frame: DataFrame) -> tuple[int, int]:
    """Row count and sum of row hashes: equal for equal multisets of rows, whatever the partitioning."""
    row = frame.agg(F.count("*"), F.sum(F.xxhash64(*frame.columns).cast("decimal(38,0)"))).first()
    assert row is not None
    return row[0], row[1]


# --- pandas generator -------------------------------------------------------------------------------------


def test_same_seed_gives_identical_frame_and_identical_parquet_bytes(visits: pd.DataFrame) -> None:
    again = generate_clinic_visits_pandas(5000)
    pd.testing.assert_frame_equal(visits, again)
    first, second = io.BytesIO(), io.BytesIO()
    visits.to_parquet(first, index=False)
    again.to_parquet(second, index=False)
    assert first.getvalue() == second.getvalue()


def test_another_seed_gives_other_data(visits: pd.DataFrame) -> None:
    other = generate_clinic_visits_pandas(5000, seed=7)
    assert len(other) == len(visits)
    assert other["name"].tolist() != visits["name"].tolist()
    assert other["ssn"].tolist() != visits["ssn"].tolist()
    assert other["cost"].tolist() != visits["cost"].tolist()


def test_pandas_frame_matches_the_schema(spark: SparkSession, schema: StructType, visits: pd.DataFrame) -> None:
    assert list(visits.columns) == COLUMNS
    assert all(isinstance(v, date) for v in visits["date_of_birth"]) and visits["cost"].dtype == "float64"
    assert spark.createDataFrame(visits, schema=CLINIC_VISITS_SCHEMA).schema == schema


def test_ids_are_unique_and_patients_have_several_visits(visits: pd.DataFrame) -> None:
    assert visits["visit_id"].is_unique
    assert visits["visit_id"].str.fullmatch(r"V\d{10}").all()
    assert visits["patient_id"].str.fullmatch(r"P\d{7}").all()
    per_patient = visits.groupby("patient_id").size()
    assert 3 <= per_patient.mean() <= 5 and per_patient.max() >= 8


def test_patient_attributes_are_identical_across_visits(visits: pd.DataFrame) -> None:
    distinct = visits.groupby("patient_id")[PATIENT_COLUMNS].nunique(dropna=False)
    assert (distinct == 1).all().all(), distinct.max()


def test_ssns_look_valid_and_are_unique_per_patient(visits: pd.DataFrame, patients: pd.DataFrame) -> None:
    assert visits["ssn"].str.match(SSN_PATTERN).all()
    assert patients["ssn"].is_unique


def test_names_include_accented_decomposed_and_padded_forms(patients: pd.DataFrame) -> None:
    names = patients["name"]
    non_ascii = ~names.map(str.isascii)
    nfd = names != names.map(lambda n: unicodedata.normalize("NFC", n))
    padded = names != names.str.strip()
    assert 0.01 <= non_ascii.mean() <= 0.08
    assert nfd.any() and padded.any() and not nfd[~non_ascii].any()
    # Normalisation matters: some patients' names differ as strings but are equal after NFC + strip.
    normalized = names.map(lambda n: unicodedata.normalize("NFC", n).strip())
    assert (normalized[nfd].isin(names[~nfd])).any()


def test_email_policy(visits: pd.DataFrame, patients: pd.DataFrame) -> None:
    assert 0.002 <= visits["email"].isna().mean() <= 0.03
    emails = patients["email"].dropna()
    assert emails.map(str.isascii).all()
    assert emails.str.fullmatch(r"[A-Za-z0-9._]+@[A-Za-z0-9.]+").all()
    assert emails.str.lower().str.endswith(EXAMPLE_DOMAINS).all()
    assert (emails == emails.str.upper()).any()
    # Derived from the name: an ASCII patient's e-mail holds their last name.
    ascii_patients = patients[patients["email"].notna() & patients["name"].map(str.isascii)]
    last_names = ascii_patients["name"].str.split().str[-1].str.replace("'", "").str.lower()
    assert all(last in email.lower() for last, email in zip(last_names, ascii_patients["email"], strict=True))


def test_only_email_has_nulls(visits: pd.DataFrame) -> None:
    assert visits.drop(columns="email").notna().all().all()


def test_value_domains(visits: pd.DataFrame) -> None:
    assert set(visits["sex"]) == {"F", "M", "X"}
    assert visits["clinic_id"].str.fullmatch(r"C(0[1-9]|1[0-2])").all()
    assert visits["zip_code"].str.fullmatch(r"\d{5}").all() and visits["zip_code"].str[:3].nunique() > 100
    assert visits["visit_date"].between(date(2024, 1, 1), date(2025, 12, 31)).all()
    assert (visits["date_of_birth"] < visits["visit_date"]).all()
    assert (visits["cost"] > 0).all() and (visits["cost"].round(2) == visits["cost"]).all()


def test_diagnoses_are_skewed_and_drive_cost(visits: pd.DataFrame) -> None:
    shares = visits["diagnosis_code"].value_counts(normalize=True)
    assert 30 <= len(shares) <= 40
    assert shares.iloc[0] > 5 * shares.median()
    median_cost = visits.groupby("diagnosis_code")["cost"].median()
    assert median_cost["A41.9"] > 10 * median_cost["Z23"]


def test_zero_rows_and_invalid_sizes() -> None:
    empty = generate_clinic_visits_pandas(0)
    assert empty.empty and list(empty.columns) == COLUMNS
    with pytest.raises(ValueError, match="n_rows"):
        generate_clinic_visits_pandas(-1)


# --- Spark generator --------------------------------------------------------------------------------------


def test_spark_schema_is_exactly_the_contract(spark: SparkSession, schema: StructType) -> None:
    assert clinic_visits_spark(spark, 10).schema == schema


@pytest.mark.parametrize("n_rows", [0, 1, 7, 12_345])
def test_spark_row_count_is_exact(spark: SparkSession, n_rows: int) -> None:
    assert clinic_visits_spark(spark, n_rows, num_partitions=3).count() == n_rows


def test_spark_ids_unique_and_patients_consistent(spark_visits: DataFrame) -> None:
    ids = spark_visits.agg(F.countDistinct("visit_id"), F.countDistinct("patient_id"), F.countDistinct("ssn")).first()
    assert ids is not None
    assert ids[0] == SPARK_ROWS
    assert SPARK_ROWS / 6 <= ids[1] <= SPARK_ROWS / 3
    assert ids[2] == ids[1]  # one SSN per patient, no two patients share one
    per_patient = spark_visits.groupBy("patient_id").agg(
        *(F.countDistinct(F.coalesce(F.col(c).cast("string"), F.lit("<null>"))).alias(c) for c in PATIENT_COLUMNS)
    )
    most = per_patient.agg(*(F.max(c).alias(c) for c in PATIENT_COLUMNS)).first()
    assert most is not None and most.asDict() == dict.fromkeys(PATIENT_COLUMNS, 1)


def test_spark_pii_shapes_and_null_policy(spark_visits: DataFrame) -> None:
    name, email = F.col("name"), F.col("email")
    checks = {
        "bad_ssn": ~F.col("ssn").rlike(SSN_PATTERN),
        "non_ascii": ~name.rlike(r"^[\x20-\x7e]*$"),
        "nfd": name.rlike(r"\p{M}"),  # a combining mark only occurs in decomposed names
        "padded": name != F.trim(name),
        "email_null": email.isNull(),
        "email_upper": email == F.upper(email),
        "email_non_ascii": ~email.rlike(r"^[\x21-\x7e]+$"),
        "other_nulls": F.greatest(*(F.col(c).isNull() for c in COLUMNS if c != "email")),
        "bad_dates": (F.col("date_of_birth") >= F.col("visit_date")) | ~F.year("visit_date").isin(2024, 2025),
        "bad_cost": (F.col("cost") <= 0) | (F.abs(F.col("cost") * 100 - F.round(F.col("cost") * 100)) > 1e-6),
        "bad_ids": ~F.col("visit_id").rlike(r"^V\d{10}$") | ~F.col("patient_id").rlike(r"^P\d{7}$"),
        "bad_zip": ~F.col("zip_code").rlike(r"^\d{5}$"),
    }
    row = spark_visits.agg(*(F.avg(c.cast("double")).alias(k) for k, c in checks.items())).first()
    assert row is not None
    share = row.asDict()
    assert share["bad_ssn"] == share["other_nulls"] == share["bad_dates"] == 0
    assert share["bad_cost"] == share["bad_ids"] == share["bad_zip"] == 0
    assert 0.01 <= share["non_ascii"] <= 0.08 and share["nfd"] > 0 and share["padded"] > 0
    assert 0.003 <= share["email_null"] <= 0.02 and share["email_upper"] > 0.005 and share["email_non_ascii"] == 0


def test_spark_distributions(spark_visits: DataFrame) -> None:
    row = spark_visits.agg(
        F.countDistinct("diagnosis_code"), F.countDistinct("clinic_id"), F.countDistinct(F.substring("zip_code", 1, 3))
    ).first()
    assert row is not None and row[0] == 40 and row[1] == 12 and row[2] > 200
    by_code = spark_visits.groupBy("diagnosis_code").agg(F.count("*").alias("n"), F.median("cost").alias("cost"))
    stats = {r["diagnosis_code"]: (r["n"], r["cost"]) for r in by_code.collect()}
    assert stats["Z00.00"][0] > 10 * stats["A41.9"][0]
    assert stats["A41.9"][1] > 10 * stats["Z23"][1]
    sexes = {r["sex"]: r["count"] for r in spark_visits.groupBy("sex").count().collect()}
    assert set(sexes) == {"F", "M", "X"} and sexes["X"] < sexes["M"] < sexes["F"] * 1.1


def test_spark_is_deterministic_whatever_the_partitioning(spark: SparkSession) -> None:
    one = digest(clinic_visits_spark(spark, 50_000, num_partitions=1))
    four = digest(clinic_visits_spark(spark, 50_000, num_partitions=4))
    other_seed = digest(clinic_visits_spark(spark, 50_000, seed=7, num_partitions=4))
    assert one == four
    assert other_seed[0] == one[0] and other_seed != one


def test_spark_generator_code_stays_jit_compilable(spark: SparkSession) -> None:
    """HotSpot interprets generated methods over 8000 bytes of bytecode; past that, generation is ~8x slower."""
    stages = clinic_visits_spark(spark, 10)._jdf.queryExecution().debug().codegenToSeq()
    sizes = [stages.apply(i)._3().maxMethodCodeSize() for i in range(stages.size())]
    assert sizes and max(sizes) < 8000, sizes


# --- writing ------------------------------------------------------------------------------------------------


def test_write_refuses_to_overwrite_unless_asked(spark: SparkSession, schema: StructType, tmp_path: Path) -> None:
    target = str(tmp_path / "visits")
    assert write_clinic_visits(target, 100) == target
    with pytest.raises(SpecError, match="visits") as refused:
        write_clinic_visits(target, 100, seed=7)
    assert not refused.value.retryable
    assert spark.read.parquet(target).schema == schema
    pd.testing.assert_frame_equal(pd.read_parquet(target), generate_clinic_visits_pandas(100))

    write_clinic_visits(target, 100, seed=7, overwrite=True)
    pd.testing.assert_frame_equal(pd.read_parquet(target), generate_clinic_visits_pandas(100, seed=7))


@pytest.mark.parametrize("n_rows", [1_000, 200_001], ids=["pandas-generated", "spark-generated"])
def test_write_with_spark(spark: SparkSession, schema: StructType, tmp_path: Path, n_rows: int) -> None:
    target = str(tmp_path / "visits")
    write_clinic_visits(target, n_rows, spark=spark)
    written = spark.read.parquet(target)
    assert written.schema == schema
    assert digest(written)[0] == n_rows
    with pytest.raises(SpecError):
        write_clinic_visits(target, n_rows, spark=spark)
    expected = (
        spark.createDataFrame(generate_clinic_visits_pandas(n_rows), schema=CLINIC_VISITS_SCHEMA)
        if n_rows <= 200_000
        else clinic_visits_spark(spark, n_rows)
    )
    assert digest(written) == digest(expected)
