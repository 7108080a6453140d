"""PII discovery: classify each column from a sample, in Spark, reporting counts and confidences only.

:func:`scan` samples the rows (``sample`` + ``limit``, in Spark), then ONE aggregation job counts, per
column and per kind, the sampled values matching that kind: regular expressions for the shapes, and the
check digits computed with Spark's higher-order functions (Luhn for card numbers, ISO 13616 mod-97 for
IBANs). Names combine a value shape (2 to 4 capitalised words, any script) with the column name. No value
reaches the driver: the report holds shares and confidences.

:func:`suggest_config` turns a scan into a starting :class:`~privstage.anonymize.config.AnonymizeConfig`
for a person to review (direct identifiers dropped, pseudonymized or masked; date of birth and ZIP
as quasi-identifiers with hierarchies; everything else kept).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from privstage.anonymize.config import AnonymizeConfig

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame

__all__ = ["KINDS", "PII_PATTERNS", "ColumnClassification", "ScanReport", "pii_match", "scan", "suggest_config"]

#: Kinds in priority order: when two kinds match equally, the earlier (more specific) one wins.
KINDS = (
    "ssn", "credit_card", "iban", "email", "ip_address", "date_of_birth", "phone", "zip_code", "person_name",
    "free_text", "date",
)  # fmt: skip

#: Whole-value Java regular expressions of each textual kind (checksums are added for cards and IBANs).
PII_PATTERNS: dict[str, str] = {
    "email": r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$",
    "ssn": r"^(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}$",
    # country code, area code (optionally in parentheses), two groups; a decimal number never matches
    "phone": r"^(?=(?:\D*\d){7,15}\D*$)\+?\d{0,3}[ .-]?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}$",
    "credit_card": r"^(?:\d[ -]?){12,18}\d$",
    "iban": r"^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$",
    "ip_address": r"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$"
    r"|^(?=.*:.*:)[0-9A-Fa-f:.]{2,45}$",
    "zip_code": r"^\d{5}(?:-\d{4})?$|^[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}$|^[A-Z]\d[A-Z] ?\d[A-Z]\d$|^\d{4}$",
    "person_name": r"^\s*\p{Lu}[\p{L}\p{M}'\u2019-]*\.?(?:\s+\p{Lu}[\p{L}\p{M}'\u2019.-]*){1,3}\s*$",
    "date": r"^\d{4}-\d{2}-\d{2}(?:[T ].*)?$|^\d{1,2}/\d{1,2}/\d{4}$",
}
_NAME_HINTS = {
    "person_name": r"(^|_)(full_?|first_?|last_?|given_?|family_?|patient_?|sur)?name(s)?($|_)",
    "date_of_birth": r"(^|_)(dob|birth|born|birth_?date|date_of_birth)($|_)",
    "zip_code": r"(^|_)(zip|zip_?code|postal|postcode|post_code|plz)($|_)",
    "ssn": r"(^|_)(ssn|social_security|sin|nin)($|_)",
    "phone": r"(^|_)(phone|tel|telephone|mobile|cell)($|_)",
    "email": r"(^|_)(e_?mail|mail)($|_)",
    "ip_address": r"(^|_)(ip|ip_?addr(ess)?|client_?ip)($|_)",
    "credit_card": r"(^|_)(card|cc|pan|credit_?card)(_?(no|num|number))?($|_)",
    "iban": r"(^|_)(iban|account)($|_)",
}
#: Confidence of a value-only match for kinds whose shape is ambiguous (5 digits, two capitalised words).
_AMBIGUOUS = {"zip_code": 0.6, "person_name": 0.7, "phone": 0.8, "date": 0.5}
_MIN_CONFIDENCE = 0.5


def _luhn(digits: Column) -> Column:
    from pyspark.sql import functions as F

    rev = F.reverse(F.split(digits, ""))
    doubled = F.transform(
        rev,
        lambda x, i: F.when(
            i % 2 == 1, F.when(x.cast("int") * 2 > 9, x.cast("int") * 2 - 9).otherwise(x.cast("int") * 2)
        ).otherwise(x.cast("int")),
    )
    return F.aggregate(doubled, F.lit(0), lambda acc, y: acc + y) % 10 == 0


def _iban_mod97(iban: Column) -> Column:
    from pyspark.sql import functions as F

    rearranged = F.concat(F.substring(iban, 5, 64), F.substring(iban, 1, 4))
    chars = F.split(rearranged, "")

    def step(acc: Column, c: Column) -> Column:
        digit = F.when(c.rlike("^[0-9]$"), (acc * 10 + c.cast("long")) % 97)
        return digit.otherwise((acc * 100 + (F.ascii(c) - 55).cast("long")) % 97)

    return F.aggregate(chars, F.lit(0).cast("long"), step) == 1


def pii_match(value: Column, kind: str) -> Column:
    """True where ``value`` (cast to text) is a value of ``kind`` (shape and check digits). Null for null."""
    from pyspark.sql import functions as F

    text = F.trim(value.cast("string"))
    if kind == "credit_card":
        digits = F.regexp_replace(text, "[ -]", "")
        return text.rlike(PII_PATTERNS["credit_card"]) & _luhn(digits)
    if kind == "iban":
        compact = F.upper(F.regexp_replace(text, " ", ""))
        return compact.rlike(PII_PATTERNS["iban"]) & _iban_mod97(compact)
    if kind in ("date_of_birth",):
        return text.rlike(PII_PATTERNS["date"])
    if kind == "free_text":
        return (F.length(text) >= 40) & (F.size(F.split(text, r"\s+")) >= 6)
    return text.rlike(PII_PATTERNS[kind])


@dataclass(frozen=True)
class ColumnClassification:
    """One column's verdict: the kind (or ``none``), a confidence in [0, 1], and per-kind match shares."""

    column: str
    data_type: str
    kind: str
    confidence: float
    sampled: int
    non_null: int
    shares: dict[str, float] = field(default_factory=dict)
    name_hint: str | None = None


@dataclass(frozen=True)
class ScanReport:
    rows_sampled: int
    columns: tuple[ColumnClassification, ...]

    def by_column(self) -> dict[str, ColumnClassification]:
        return {c.column: c for c in self.columns}

    def to_dict(self) -> dict[str, Any]:
        return {"rows_sampled": self.rows_sampled, "columns": [asdict(c) for c in self.columns]}


def _name_hint(column: str) -> str | None:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", column).lower()
    for kind, pattern in _NAME_HINTS.items():
        if re.search(pattern, snake):
            return kind
    return None


def scan(df: DataFrame, *, sample_rows: int = 10_000, seed: int | None = None) -> ScanReport:
    """Classify every column of ``df`` from a sample of about ``sample_rows`` rows.

    Two Spark jobs: a row count (to choose the sampling fraction) and one aggregation over the sample.
    Returns counts, shares and confidences; never a value.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, NumericType, StringType, TimestampNTZType, TimestampType

    total = df.count()
    fraction = 1.0 if total <= sample_rows else min(1.0, 1.5 * sample_rows / total)
    sample = df if fraction >= 1.0 else df.sample(withReplacement=False, fraction=fraction, seed=seed)
    sample = sample.limit(sample_rows)
    fields = df.schema.fields
    aggs: list[Column] = [F.count(F.lit(1)).alias("__rows")]
    plan: dict[str, list[str]] = {}
    for i, f in enumerate(fields):
        col = F.col(f"`{f.name}`")
        aggs.append(F.count(col).alias(f"n{i}"))
        if isinstance(f.dataType, DateType | TimestampType | TimestampNTZType):
            kinds: list[str] = []
        elif isinstance(f.dataType, StringType | NumericType):
            kinds = [k for k in KINDS if k not in ("date_of_birth",)]
            if isinstance(f.dataType, NumericType):
                kinds = ["credit_card", "phone", "zip_code"]
        else:
            kinds = []
        plan[f.name] = kinds
        for kind in kinds:
            aggs.append(F.sum(pii_match(col, kind).cast("long")).alias(f"m{i}_{kind}"))
    row = sample.agg(*aggs).first()
    sampled = int(row["__rows"] or 0)
    out = []
    for i, f in enumerate(fields):
        non_null = int(row[f"n{i}"] or 0)
        shares = {k: round(int(row[f"m{i}_{k}"] or 0) / non_null, 4) if non_null else 0.0 for k in plan[f.name]}
        hint = _name_hint(f.name)
        is_temporal = isinstance(f.dataType, DateType | TimestampType | TimestampNTZType)
        if is_temporal:
            shares["date"] = 1.0 if non_null else 0.0
        kind, confidence = _decide(shares, hint, non_null)
        out.append(
            ColumnClassification(
                column=f.name, data_type=f.dataType.simpleString(), kind=kind, confidence=confidence,
                sampled=sampled, non_null=non_null, shares=shares, name_hint=hint,
            )
        )  # fmt: skip
    return ScanReport(rows_sampled=sampled, columns=tuple(out))


def _decide(shares: dict[str, float], hint: str | None, non_null: int) -> tuple[str, float]:
    if non_null == 0:
        return (hint, 0.5) if hint else ("none", 0.0)
    scored: dict[str, float] = {}
    for kind, share in shares.items():
        confidence = share * _AMBIGUOUS.get(kind, 1.0)
        if hint == kind:
            confidence = min(1.0, share * 1.0 + 0.2) if share > 0 else 0.5
        scored[kind] = confidence
    if "date" in scored and hint == "date_of_birth":
        scored["date_of_birth"] = min(1.0, shares["date"] * 0.95 + 0.05)
        scored["date"] = 0.0
    if hint and hint not in scored and hint != "date_of_birth":
        scored[hint] = 0.5  # the column name alone, e.g. an all-masked 'ssn' column
    best = max(scored.items(), key=lambda kv: (round(kv[1], 4), -KINDS.index(kv[0])), default=("none", 0.0))
    if best[1] < _MIN_CONFIDENCE:
        return "none", round(best[1], 4)
    return best[0], round(best[1], 4)


def suggest_config(
    report: ScanReport,
    *,
    key_id: str = "pseudonym-key",
    k: int = 5,
    max_suppression: float = 0.02,
    reference_date: dt.date | None = None,
    sensitive: str | None = None,
    l: int | None = None,  # noqa: E741
    identifier_columns: tuple[str, ...] = (),
) -> AnonymizeConfig:
    """A starting anonymization config from a scan, for a person to review before use.

    Direct identifiers: ``person_name``, ``ssn``, ``ip_address``, ``free_text`` dropped; ``email`` and the
    ``identifier_columns`` pseudonymized; ``phone``, ``credit_card``, ``iban`` masked to their last
    digits. Quasi-identifiers: ``date_of_birth`` as age bands at ``reference_date``, ``zip_code`` as
    prefix truncation. Everything else is kept explicitly (``unlisted: error`` then catches schema drift).
    """
    columns: list[dict[str, Any]] = []
    ref = reference_date or dt.date.today()
    for c in report.columns:
        if c.column == sensitive:
            columns.append({"column": c.column, "action": "sensitive"})
        elif c.column in identifier_columns:
            columns.append({"column": c.column, "action": "pseudonymize", "key_id": key_id})
        elif c.kind in ("person_name", "ssn", "ip_address", "free_text"):
            columns.append({"column": c.column, "action": "drop"})
        elif c.kind == "email":
            columns.append({"column": c.column, "action": "pseudonymize", "key_id": key_id, "case_fold": True})
        elif c.kind in ("phone", "credit_card", "iban"):
            keep = 2 if c.kind == "phone" else 4
            columns.append({"column": c.column, "action": "mask", "mode": "keep_last", "keep_last": keep})
        elif c.kind == "date_of_birth":
            columns.append(
                {"column": c.column, "action": "quasi_identifier",
                 "hierarchy": {"type": "age", "reference_date": ref.isoformat(), "widths": [5, 10, 20]}, "min_level": 1}
            )  # fmt: skip
        elif c.kind == "zip_code":
            columns.append(
                {"column": c.column, "action": "quasi_identifier",
                 "hierarchy": {"type": "prefix", "keep": [3, 2, 1], "pattern": r"[0-9]{5}"}, "min_level": 1}
            )  # fmt: skip
        else:
            columns.append({"column": c.column, "action": "keep"})
    if not any(col["action"] == "quasi_identifier" for col in columns):
        raise ValueError("the scan found no quasi-identifier (date of birth, ZIP code); declare them by hand")
    return AnonymizeConfig.model_validate(
        {"columns": columns, "k": k, "l": l, "max_suppression": max_suppression, "unlisted": "error"}
    )
