"""Deterministic synthetic patient visits for the demo, the tests and the benchmarks.

Two generators share one schema (:data:`CLINIC_VISITS_SCHEMA`) and the same value distributions:

* :func:`generate_clinic_visits_pandas` draws with ``numpy.random.default_rng(seed)``; for small sizes.
* :func:`clinic_visits_spark` computes every value inside Spark from ``spark.range`` ids with built-in
  hash functions (no Python UDF, nothing collected), so ten million rows take seconds and the result
  depends only on ``(n_rows, seed)``, never on partitioning.

The two generators do not agree row for row (pandas rows are sorted by visit date; Spark rows come
grouped by patient, 0 to 8 visits each, usually 1 to 7). Both keep a patient's name, email, SSN, date of birth,
ZIP code and sex identical across that patient's visits. The data are made to exercise privacy
stages: a few names per hundred are non-ASCII, some of them in decomposed (NFD) form, a few carry
stray spaces, e-mails vary in case and are sometimes null. Every SSN looks valid (area never 000,
666 or 9xx; group never 00; serial never 0000) and is unique per patient; every e-mail domain is an
RFC 2606 example domain. No value belongs to a real person.
"""

from __future__ import annotations

import shutil
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from privstage.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = [
    "CLINIC_VISITS_SCHEMA",
    "DEFAULT_SEED",
    "DIAGNOSIS_CODES",
    "MULTI_CLINIC_COLUMNS",
    "SPARK_GENERATION_THRESHOLD",
    "clinic_visits_spark",
    "generate_clinic_visits_pandas",
    "write_clinic_visits",
    "write_multi_clinic_visits",
]

#: Spark DDL of the visits table; both generators and the written Parquet have exactly this schema.
CLINIC_VISITS_SCHEMA = (
    "visit_id STRING, patient_id STRING, name STRING, email STRING, ssn STRING, date_of_birth DATE, "
    "zip_code STRING, sex STRING, clinic_id STRING, visit_date DATE, diagnosis_code STRING, cost DOUBLE"
)
DEFAULT_SEED = 20241124
#: Above this many rows, :func:`write_clinic_visits` generates in Spark instead of pandas.
SPARK_GENERATION_THRESHOLD = 200_000

_FIRST = (
    "Olivia Liam Emma Noah Ava Elijah Sophia James Isabella William Mia Benjamin Charlotte Lucas Amelia "
    "Henry Harper Alexander Evelyn Michael Abigail Daniel Emily Matthew Elizabeth Jackson Sofia David "
    "Avery Joseph Ella Samuel Grace Sebastian Chloe Wyatt Victoria Owen Lily Dylan Hannah Gabriel Nora "
    "Isaac Layla Anthony Maria Carlos Wei Priya Mohammed Aisha Hiroshi Fatima Ana Kwame Olga Raj Mei"
).split()
_LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Kim Patel Chen Singh O'Brien Kowalski "
    "Murphy Cohen Schmidt Rossi Okafor"
).split()
# Every one holds at least one character that NFD decomposes, so its NFD form differs from its NFC form.
_NON_ASCII = (
    "José Müller", "Zoë Ångström", "Nguyễn Văn An", "François Lefèvre", "Björn Sørensen",
    "Łukasz Wójcik", "Renée Dubois", "Jürgen Groß", "Ayşe Güneş", "Mehmet Öztürk", "Ólafur Jónsson",
    "Antonín Dvořák", "Siobhán Ó Briain", "Inés Ibáñez", "Thérèse Côté", "Göran Åkesson",
    "Trần Thị Mai", "Lê Văn Đức", "João Conceição", "Ümit Çelik", "Ana Luísa Gonçalves", "Chloë Brontë",
)  # fmt: skip
_NON_ASCII_NFD = tuple(unicodedata.normalize("NFD", name) for name in _NON_ASCII)
_TRANSLITERATE = str.maketrans({"ø": "o", "ß": "ss", "æ": "ae", "ł": "l", "đ": "d"})
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "patients.example.org")
_SEXES = ("F", "M", "X")
_CLINICS = tuple(f"C{i:02d}" for i in range(1, 13))
# 327 three-digit ZIP prefixes spread over the whole country; earlier ones are drawn more often.
_ZIP3 = tuple(f"{p:03d}" for p in range(10, 990, 3))
# ICD-10-CM codes ordered from most to least frequent, each with a typical visit cost in dollars.
_DIAGNOSES: tuple[tuple[str, float], ...] = (
    ("Z00.00", 180), ("I10", 140), ("E11.9", 160), ("J06.9", 95), ("M54.50", 210), ("E78.5", 120),
    ("Z23", 60), ("F41.1", 150), ("J02.9", 90), ("N39.0", 110), ("K21.9", 130), ("F32.9", 160),
    ("R51.9", 140), ("J45.909", 170), ("R10.9", 260), ("E66.9", 120), ("M25.561", 190), ("L30.9", 100),
    ("H10.9", 85), ("R05.9", 90), ("J20.9", 120), ("E03.9", 115), ("Z34.90", 220), ("G43.909", 230),
    ("K59.00", 95), ("U07.1", 340), ("I25.10", 480), ("J44.9", 420), ("N18.30", 390), ("I48.91", 620),
    ("M17.11", 350), ("S93.401A", 280), ("R07.9", 750), ("S52.501A", 1450), ("I50.9", 980),
    ("C50.911", 3200), ("C34.90", 4100), ("K35.80", 5600), ("I63.9", 5200), ("A41.9", 6800),
)  # fmt: skip

_VISITS_PER_PATIENT = 4
_NON_ASCII_SHARE, _NFD_SHARE, _SPACE_SHARE = 0.04, 0.35, 0.02
_EMAIL_NULL_SHARE, _EMAIL_UPPER_SHARE, _EMAIL_CAPITAL_SHARE = 0.01, 0.03, 0.03
_SEX_CUTS = (0.50, 0.98)  # F below the first, M below the second, X above
_HOME_CLINIC_SHARE = 0.85
_ZIP_SKEW, _CLINIC_SKEW, _DIAGNOSIS_SKEW = 1.5, 1.3, 2.2  # index = floor(n * u ** skew)
_COST_SIGMA = 0.45  # log-normal spread of a visit's cost around its diagnosis's typical cost
_MAX_AGE_YEARS = 95
_BIRTH_ANCHOR, _VISIT_START, _VISIT_DAYS = "2023-12-31", "2024-01-01", 731
# Affine bijections (a*i + b mod m, gcd(a, m) = 1) turn row and patient indexes into unique,
# unordered-looking ids and SSNs.
_VISIT_ID_MOD, _VISIT_ID_MUL = 10**10, 3_141_592_653
_PATIENT_ID_MOD, _PATIENT_ID_MUL = 10**7, 2_718_281
_SSN_GROUPS, _SSN_SERIALS = 99, 9999
_SSN_MOD, _SSN_MUL = 898 * _SSN_GROUPS * _SSN_SERIALS, 1_000_003
_MAX_ROWS = 10**9


def _ascii_slug(text: str) -> str:
    """Lower-case ASCII letters and digits of ``text`` (accents dropped): the e-mail form of a name."""
    decomposed = unicodedata.normalize("NFKD", text.lower().translate(_TRANSLITERATE))
    return "".join(c for c in decomposed if c.isascii() and c.isalnum())


_FIRST_SLUG = tuple(_ascii_slug(n) for n in _FIRST)
_LAST_SLUG = tuple(_ascii_slug(n) for n in _LAST)
_NON_ASCII_FIRST_SLUG = tuple(_ascii_slug(n.split()[0]) for n in _NON_ASCII)
_NON_ASCII_LAST_SLUG = tuple(_ascii_slug(n.split()[-1]) for n in _NON_ASCII)
_DIAGNOSIS_CODES = tuple(code for code, _ in _DIAGNOSES)
_DIAGNOSIS_COSTS = tuple(float(cost) for _, cost in _DIAGNOSES)
#: The public diagnosis code set (every code the generators draw), in frequency order.
DIAGNOSIS_CODES: tuple[str, ...] = _DIAGNOSIS_CODES
#: Columns each clinic keeps in :func:`write_multi_clinic_visits` (no direct identifiers).
MULTI_CLINIC_COLUMNS = ("visit_id", "clinic_id", "visit_date", "diagnosis_code", "cost")


def _patient_count(n_rows: int) -> int:
    if not 0 <= n_rows <= _MAX_ROWS:
        raise ValueError(f"n_rows must be between 0 and {_MAX_ROWS}, got {n_rows}")
    return min(max(1, n_rows // _VISITS_PER_PATIENT), _PATIENT_ID_MOD)


def _offset(seed: int, modulus: int, salt: int) -> int:
    return (seed * 1_000_003 + salt) % modulus


def generate_clinic_visits_pandas(n_rows: int = 5000, *, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """Generate ``n_rows`` patient visits in pandas, identical for identical arguments.

    Args:
        n_rows: number of visits; about one patient per four visits.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        A frame with the columns of :data:`CLINIC_VISITS_SCHEMA`, sorted by visit date and visit id:
        strings as ``object`` (``None`` for a null e-mail), dates as ``datetime.date`` objects, cost
        as ``float64``.
    """
    n_patients = _patient_count(n_rows)
    rng = np.random.default_rng(seed)
    index = np.arange(n_patients, dtype=np.int64)

    def skewed(n: int, skew: float, size: int) -> np.ndarray:
        return np.minimum(np.floor(n * rng.random(size) ** skew), n - 1).astype(np.int64)

    # Patients.
    first, last = rng.integers(len(_FIRST), size=n_patients), rng.integers(len(_LAST), size=n_patients)
    foreign, nfd = rng.integers(len(_NON_ASCII), size=n_patients), rng.random(n_patients) < _NFD_SHARE
    is_foreign = rng.random(n_patients) < _NON_ASCII_SHARE
    space = rng.random(n_patients)
    names, firsts, lasts = [], [], []
    for i in range(n_patients):
        if is_foreign[i]:
            name = (_NON_ASCII_NFD if nfd[i] else _NON_ASCII)[foreign[i]]
            firsts.append(_NON_ASCII_FIRST_SLUG[foreign[i]])
            lasts.append(_NON_ASCII_LAST_SLUG[foreign[i]])
        else:
            name = f"{_FIRST[first[i]]} {_LAST[last[i]]}"
            firsts.append(_FIRST_SLUG[first[i]])
            lasts.append(_LAST_SLUG[last[i]])
        if space[i] < _SPACE_SHARE / 2:
            name = " " + name
        elif space[i] < _SPACE_SHARE:
            name += "  "
        names.append(name)

    style, digits = rng.integers(3, size=n_patients), rng.integers(100, size=n_patients)
    with_digits, domain = rng.random(n_patients) < 0.4, rng.integers(len(_DOMAINS), size=n_patients)
    case = rng.random(n_patients)
    emails: list[str | None] = []
    for i in range(n_patients):
        local = (f"{firsts[i]}.{lasts[i]}", f"{firsts[i]}_{lasts[i]}", f"{firsts[i][:1]}{lasts[i]}")[style[i]]
        email = f"{local}{digits[i] if with_digits[i] else ''}@{_DOMAINS[domain[i]]}"
        if case[i] < _EMAIL_NULL_SHARE:
            emails.append(None)
            continue
        if case[i] < _EMAIL_NULL_SHARE + _EMAIL_UPPER_SHARE:
            email = email.upper()
        elif case[i] < _EMAIL_NULL_SHARE + _EMAIL_UPPER_SHARE + _EMAIL_CAPITAL_SHARE:
            email = email[:1].upper() + email[1:]
        emails.append(email)

    ssn_number = (index * _SSN_MUL + _offset(seed, _SSN_MOD, 3)) % _SSN_MOD
    area = ssn_number // (_SSN_GROUPS * _SSN_SERIALS) + 1
    area = area + (area >= 666)
    group = ssn_number // _SSN_SERIALS % _SSN_GROUPS + 1
    serial = ssn_number % _SSN_SERIALS + 1
    ssns = [f"{a:03d}-{g:02d}-{s:04d}" for a, g, s in zip(area, group, serial, strict=True)]
    age_days = np.floor(rng.triangular(0, _MAX_AGE_YEARS / 2, _MAX_AGE_YEARS, n_patients) * 365.25)
    birth = np.datetime64(_BIRTH_ANCHOR) - age_days.astype("timedelta64[D]")
    zip_codes = [
        f"{_ZIP3[p]}{d:02d}"
        for p, d in zip(skewed(len(_ZIP3), _ZIP_SKEW, n_patients), rng.integers(100, size=n_patients), strict=True)
    ]
    sex = np.searchsorted(_SEX_CUTS, rng.random(n_patients), side="right")
    home_clinic = skewed(len(_CLINICS), _CLINIC_SKEW, n_patients)
    patient_numbers = (index * _PATIENT_ID_MUL + _offset(seed, _PATIENT_ID_MOD, 2)) % _PATIENT_ID_MOD

    # Visits.
    patient = rng.integers(n_patients, size=n_rows)
    clinic = np.where(rng.random(n_rows) < _HOME_CLINIC_SHARE, home_clinic[patient],
                      skewed(len(_CLINICS), _CLINIC_SKEW, n_rows))  # fmt: skip
    diagnosis = skewed(len(_DIAGNOSES), _DIAGNOSIS_SKEW, n_rows)
    cost = np.maximum(np.asarray(_DIAGNOSIS_COSTS)[diagnosis] * rng.lognormal(0.0, _COST_SIGMA, n_rows), 1.0)
    visit = np.datetime64(_VISIT_START) + rng.integers(_VISIT_DAYS, size=n_rows).astype("timedelta64[D]")
    visit_numbers = (
        np.arange(n_rows, dtype=np.int64) * _VISIT_ID_MUL + _offset(seed, _VISIT_ID_MOD, 1)
    ) % _VISIT_ID_MOD

    def pick(values: list | tuple, at: np.ndarray) -> list:
        return [values[i] for i in at]

    frame = pd.DataFrame(
        {
            "visit_id": [f"V{v:010d}" for v in visit_numbers],
            "patient_id": pick([f"P{p:07d}" for p in patient_numbers], patient),
            "name": pick(names, patient),
            "email": pick(emails, patient),
            "ssn": pick(ssns, patient),
            "date_of_birth": pick(birth.astype(object).tolist(), patient),
            "zip_code": pick(zip_codes, patient),
            "sex": pick(_SEXES, sex[patient]),
            "clinic_id": pick(_CLINICS, clinic),
            "visit_date": visit.astype(object).tolist(),
            "diagnosis_code": pick(_DIAGNOSIS_CODES, diagnosis),
            "cost": np.round(cost, 2),
        }
    )
    return frame.sort_values(["visit_date", "visit_id"], kind="stable", ignore_index=True)


def clinic_visits_spark(
    spark: SparkSession, n_rows: int, *, seed: int = DEFAULT_SEED, num_partitions: int | None = None
) -> DataFrame:
    """Generate ``n_rows`` patient visits lazily in Spark, with the DataFrame API only.

    Patients come from ``spark.range``; each patient's attributes are computed once and the patient is
    exploded into its visits. Patient ``k`` owns the visit indexes ``[start(k), start(k + 1))`` with
    ``start(k) = floor((k + u_k) * n_rows / n_patients)``, so every patient has 0 to 8 visits (4 on
    average) and the total is exactly ``n_rows``. Every value comes from built-in ``xxhash64`` hashes of
    the seed and the patient or visit index (16 bits per field), so the result depends on
    ``(n_rows, seed)`` alone, whatever ``num_partitions``. Works on classic Spark and Spark Connect.

    Args:
        spark: the session to build the DataFrame in.
        n_rows: number of visits.
        seed: mixes into every hash; a different seed gives different data.
        num_partitions: partitions of the patients' ``spark.range`` (Spark's default when None).

    Returns:
        A DataFrame, grouped by patient, whose schema is exactly :data:`CLINIC_VISITS_SCHEMA`.
    """
    from pyspark.sql import functions as F

    n_patients = _patient_count(n_rows)
    fields = {
        "p": ("foreign", "which", "nfd", "first", "last", "space", "case", "style", "numbered", "number", "domain",
              "age1", "age2", "zip3", "zip5", "sex", "home_clinic"),
        "id": ("at_home", "clinic", "diagnosis", "cost1", "cost2", "visit_day"),
    }  # fmt: skip

    def hashes(key: str) -> dict[str, Column]:
        """One 64-bit hash of (seed, key, i) per four fields: hashing dominates the generator's cost."""
        return {
            f"{key}{i}": F.xxhash64(F.lit(seed), F.lit(key), F.lit(i), F.col(key))
            for i in range(0, len(fields[key]), 4)
        }

    def to_unit(bits: Column) -> Column:
        """16 random bits as a double in (0, 1)."""
        return (bits.bitwiseAND(0xFFFF) + 0.5) / 65536.0

    def uniform(field: str) -> Column:
        key = "p" if field in fields["p"] else "id"
        slot = fields[key].index(field)
        return to_unit(F.shiftrightunsigned(F.col(f"{key}{slot - slot % 4}"), 16 * (slot % 4)))

    def index(field: str, n: int, skew: float = 1.0) -> Column:
        """An integer in [0, n) (u <= 1 - 2**-17 keeps floor(u * n) below n); skew > 1 favours small ones."""
        u = uniform(field) if skew == 1.0 else F.pow(uniform(field), skew)
        return F.floor(u * n)

    def pick(values: Sequence[str | float], at: Column) -> Column:
        return F.get(F.array(*(F.lit(v) for v in values)), at.cast("int"))

    def affine(key: str, mul: int, modulus: int, salt: int) -> Column:
        return F.pmod(F.col(key) * F.lit(mul) + F.lit(_offset(seed, modulus, salt)), F.lit(modulus))

    def digits(value: Column, width: int) -> Column:
        return F.lpad(value.cast("string"), width, "0")

    def first_visit(k: Column) -> Column:
        """floor((k + u_k) * n_rows / n_patients): non-decreasing in k, 0 at k = 0, n_rows at k = n_patients."""
        jitter = to_unit(F.xxhash64(F.lit(seed), F.lit("start"), k))
        return F.when(k == 0, 0).when(k >= n_patients, n_rows).otherwise(F.floor((k + jitter) * (n_rows / n_patients)))

    # Each withColumns is one projection, so a value used several times below is computed once per row.
    patients = spark.range(0, n_patients, 1, num_partitions).withColumnRenamed("id", "p").withColumns(hashes("p"))
    patients = patients.withColumns(
        {
            "foreign": F.when(uniform("foreign") < _NON_ASCII_SHARE, index("which", len(_NON_ASCII))),
            "first": index("first", len(_FIRST)),
            "last": index("last", len(_LAST)),
            "ssn_number": affine("p", _SSN_MUL, _SSN_MOD, 3),
        }
    )
    foreign = F.col("foreign")  # null for an ASCII name
    nfd = (uniform("nfd") < _NFD_SHARE).cast("int") * len(_NON_ASCII)
    first = pick(_FIRST_SLUG + _NON_ASCII_FIRST_SLUG, F.coalesce(foreign + len(_FIRST), F.col("first")))
    last = pick(_LAST_SLUG + _NON_ASCII_LAST_SLUG, F.coalesce(foreign + len(_LAST), F.col("last")))
    style = index("style", 3)  # first.last, first_last, flast
    number = F.when(uniform("numbered") < 0.4, index("number", 100).cast("string")).otherwise("")
    patients = patients.withColumns(
        {
            "plain_name": F.coalesce(
                pick(_NON_ASCII + _NON_ASCII_NFD, foreign + nfd),
                F.concat(pick(_FIRST, F.col("first")), F.lit(" "), pick(_LAST, F.col("last"))),
            ),
            "raw_email": F.concat(
                F.when(style == 2, first.substr(1, 1)).otherwise(first), pick((".", "_", ""), style), last, number,
                F.lit("@"), pick(_DOMAINS, index("domain", len(_DOMAINS))),
            ),
        }
    )  # fmt: skip

    plain_name, raw_email, space, case = F.col("plain_name"), F.col("raw_email"), uniform("space"), uniform("case")
    upper_below = _EMAIL_NULL_SHARE + _EMAIL_UPPER_SHARE
    ssn_number = F.col("ssn_number")
    area = F.floor(ssn_number / (_SSN_GROUPS * _SSN_SERIALS)) + 1
    group = F.pmod(F.floor(ssn_number / _SSN_SERIALS), F.lit(_SSN_GROUPS)) + 1
    serial = F.pmod(ssn_number, F.lit(_SSN_SERIALS)) + 1
    ssn = digits((area + (area >= 666).cast("long")) * 10**6 + group * 10**4 + serial, 9)
    age_days = F.floor((uniform("age1") + uniform("age2")) * (_MAX_AGE_YEARS / 2 * 365.25))
    sex = uniform("sex")
    patients = patients.select(
        first_visit(F.col("p")).alias("start"),
        first_visit(F.col("p") + 1).alias("stop"),
        F.concat(F.lit("P"), digits(affine("p", _PATIENT_ID_MUL, _PATIENT_ID_MOD, 2), 7)).alias("patient_id"),
        F.concat(
            F.when(space < _SPACE_SHARE / 2, " ").otherwise(""),
            plain_name,
            F.when((space >= _SPACE_SHARE / 2) & (space < _SPACE_SHARE), "  ").otherwise(""),
        ).alias("name"),
        F.when(case < _EMAIL_NULL_SHARE, F.lit(None))
        .when(case < upper_below, F.upper(raw_email))
        .when(case < upper_below + _EMAIL_CAPITAL_SHARE, F.initcap(raw_email))  # no spaces: capitalises one letter
        .otherwise(raw_email)
        .alias("email"),
        F.concat_ws("-", ssn.substr(1, 3), ssn.substr(4, 2), ssn.substr(6, 4)).alias("ssn"),
        F.date_sub(F.to_date(F.lit(_BIRTH_ANCHOR)), age_days.cast("int")).alias("date_of_birth"),
        F.concat(pick(_ZIP3, index("zip3", len(_ZIP3), _ZIP_SKEW)), digits(index("zip5", 100), 2)).alias("zip_code"),
        F.when(sex < _SEX_CUTS[0], "F").when(sex < _SEX_CUTS[1], "M").otherwise("X").alias("sex"),
        index("home_clinic", len(_CLINICS), _CLINIC_SKEW).alias("home_clinic"),
    )

    visits = (
        patients.where(F.col("stop") > F.col("start"))
        .withColumn("id", F.explode(F.sequence(F.col("start"), F.col("stop") - 1)))
        .withColumns(hashes("id"))
    )
    visits = visits.withColumn("diagnosis", index("diagnosis", len(_DIAGNOSES), _DIAGNOSIS_SKEW))
    clinic = F.when(uniform("at_home") < _HOME_CLINIC_SHARE, F.col("home_clinic")).otherwise(
        index("clinic", len(_CLINICS), _CLINIC_SKEW)
    )
    normal = F.sqrt(-2.0 * F.log(uniform("cost1"))) * F.cos(2.0 * np.pi * uniform("cost2"))
    cost = F.greatest(pick(_DIAGNOSIS_COSTS, F.col("diagnosis")) * F.exp(normal * _COST_SIGMA), F.lit(1.0))
    visits = visits.select(
        F.concat(F.lit("V"), digits(affine("id", _VISIT_ID_MUL, _VISIT_ID_MOD, 1), 10)).alias("visit_id"),
        *("patient_id", "name", "email", "ssn", "date_of_birth", "zip_code", "sex"),
        pick(_CLINICS, clinic).alias("clinic_id"),
        F.date_add(F.to_date(F.lit(_VISIT_START)), index("visit_day", _VISIT_DAYS).cast("int")).alias("visit_date"),
        pick(_DIAGNOSIS_CODES, F.col("diagnosis")).alias("diagnosis_code"),
        # floor(100 x + 0.5) / 100 is round-half-up to cents without Spark's per-row BigDecimal.
        (F.floor(cost * 100.0 + 0.5) / 100.0).alias("cost"),
    )
    # Spark proves most computed columns NOT NULL; the contract, like every Parquet read, is all nullable.
    nullable = [F.when(F.col(c).isNotNull(), F.col(c)).alias(c) for c in visits.columns]
    return visits.select(*nullable)


def write_clinic_visits(
    path: str,
    n_rows: int = 5000,
    *,
    spark: SparkSession | None = None,
    seed: int = DEFAULT_SEED,
    overwrite: bool = False,
) -> str:
    """Write ``n_rows`` generated visits as a Parquet dataset (a directory) at a local ``path``.

    With ``spark``, more than :data:`SPARK_GENERATION_THRESHOLD` rows are generated by
    :func:`clinic_visits_spark`, fewer by the pandas generator and handed to Spark; without it, the
    pandas frame is written as one Parquet file with pyarrow. Either way Spark reads the dataset back
    with the schema :data:`CLINIC_VISITS_SCHEMA`.

    Args:
        path: the dataset directory to create.
        n_rows: number of visits.
        spark: the session to write with; None writes with pyarrow, no Spark needed.
        seed: the generator seed.
        overwrite: replace an existing ``path`` instead of refusing.

    Returns:
        ``path``, unchanged.

    Raises:
        SpecError: ``path`` exists and ``overwrite`` is False.
    """
    target = Path(path)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise SpecError("sample data already exists; pass overwrite=True to replace it", path=path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    if spark is None:
        frame = generate_clinic_visits_pandas(n_rows, seed=seed)
        target.mkdir(parents=True)
        frame.to_parquet(target / "part-00000.parquet", engine="pyarrow", index=False)
        return path
    if n_rows > SPARK_GENERATION_THRESHOLD:
        visits = clinic_visits_spark(spark, n_rows, seed=seed)
    else:
        visits = spark.createDataFrame(generate_clinic_visits_pandas(n_rows, seed=seed), schema=CLINIC_VISITS_SCHEMA)
    visits.write.mode("errorifexists").parquet(path)
    return path


def write_multi_clinic_visits(
    root: str | Path,
    *,
    clinics: Sequence[str] = ("C01", "C02", "C03"),
    n_rows: int = 600,
    seed: int = DEFAULT_SEED,
) -> dict[str, str]:
    """Each clinic's own visits (its rows of one generated table) as ``<root>/<clinic>/visits``, with pyarrow.

    For the multi-party homomorphic sum example: every clinic holds only its own rows, with
    :data:`MULTI_CLINIC_COLUMNS`; the same ``(n_rows, seed)`` always gives the same files.

    Returns:
        Clinic id -> its dataset directory.

    Raises:
        SpecError: an unknown clinic id, or a dataset already exists.
    """
    unknown = sorted(set(clinics) - set(_CLINICS))
    if unknown:
        raise SpecError(f"unknown clinic ids {unknown} (known: {_CLINICS[0]} to {_CLINICS[-1]})")
    frame = generate_clinic_visits_pandas(n_rows, seed=seed)
    out: dict[str, str] = {}
    for clinic in clinics:
        target = Path(root) / clinic / "visits"
        if target.exists():
            raise SpecError("sample data already exists", path=str(target))
        target.mkdir(parents=True)
        rows = frame.loc[frame["clinic_id"] == clinic, list(MULTI_CLINIC_COLUMNS)].reset_index(drop=True)
        rows.to_parquet(target / "part-00000.parquet", engine="pyarrow", index=False)
        out[clinic] = str(target)
    return out
