"""Re-identification risk and utility of a release, measured on the release itself (counts only).

:func:`measure_risk` runs one Spark aggregation over the data (group by the quasi-identifiers, then
summarise the classes) and returns :class:`RiskReport`: no value of any column, only sizes and shares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

__all__ = ["PROSECUTOR_THRESHOLDS", "RiskReport", "class_stats", "measure_risk", "risk_of_classes"]

#: Prosecutor-risk thresholds reported: share of records whose re-identification risk 1/|class| exceeds each.
PROSECUTOR_THRESHOLDS = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
#: Upper edges of the class-size histogram (a class of size s falls in the first bucket with s <= edge).
SIZE_EDGES = (1, 2, 4, 9, 19, 49, 99, 999)


@dataclass(frozen=True)
class RiskReport:
    """Risk of one release. Every figure is a count, a share or a size: never a value."""

    rows: int
    classes: int
    min_class_size: int
    mean_class_size: float
    min_l: int | None
    class_size_histogram: dict[str, int]
    prosecutor_risk_max: float
    records_at_risk_above: dict[str, float]
    discernibility: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def class_stats(data: DataFrame, quasi_identifiers: list[str], sensitive: str | None) -> DataFrame:
    """One row per equivalence class: ``n`` (rows) and ``l`` (distinct non-null sensitive values)."""
    from pyspark.sql import functions as F

    aggs = [F.count(F.lit(1)).alias("n")]
    if sensitive is not None:
        aggs.append(F.count_distinct(F.col(sensitive)).alias("l"))
    return data.groupBy(*[F.col(q) for q in quasi_identifiers]).agg(*aggs)


def _bucket_label(i: int) -> str:
    low = 1 if i == 0 else SIZE_EDGES[i - 1] + 1
    if i == len(SIZE_EDGES):
        return f">={low}"
    return str(low) if low == SIZE_EDGES[i] else f"{low}-{SIZE_EDGES[i]}"


def measure_risk(data: DataFrame, quasi_identifiers: list[str], sensitive: str | None = None) -> RiskReport:
    """Class sizes, prosecutor risk, l and discernibility of ``data`` over its quasi-identifiers (one job)."""
    return risk_of_classes(class_stats(data, quasi_identifiers, sensitive), has_l=sensitive is not None)


def risk_of_classes(classes: DataFrame, *, has_l: bool) -> RiskReport:
    """The :class:`RiskReport` of a table of equivalence classes (``n`` rows and, with ``has_l``, ``l``) (one job)."""
    from pyspark.sql import functions as F

    sensitive = "l" if has_l else None
    n = F.col("n")
    aggs = [
        F.sum(n).alias("rows"),
        F.count(F.lit(1)).alias("classes"),
        F.min(n).alias("min_n"),
        F.sum(n * n).alias("dm"),
    ]
    if sensitive is not None:
        aggs.append(F.min("l").alias("min_l"))
    for i, edge in enumerate(SIZE_EDGES):
        low = 1 if i == 0 else SIZE_EDGES[i - 1] + 1
        aggs.append(F.sum(((n >= low) & (n <= edge)).cast("long")).alias(f"h{i}"))
    aggs.append(F.sum((n > SIZE_EDGES[-1]).cast("long")).alias(f"h{len(SIZE_EDGES)}"))
    for i, t in enumerate(PROSECUTOR_THRESHOLDS):
        aggs.append(F.sum(F.when(F.lit(1.0) / n > F.lit(t), n).otherwise(F.lit(0))).alias(f"r{i}"))
    row = classes.agg(*aggs).first()
    rows = int(row["rows"] or 0)
    n_classes = int(row["classes"] or 0)
    min_n = int(row["min_n"] or 0)
    return RiskReport(
        rows=rows,
        classes=n_classes,
        min_class_size=min_n,
        mean_class_size=round(rows / n_classes, 3) if n_classes else 0.0,
        min_l=(int(row["min_l"]) if row["min_l"] is not None else 0) if sensitive is not None else None,
        class_size_histogram={_bucket_label(i): int(row[f"h{i}"] or 0) for i in range(len(SIZE_EDGES) + 1)},
        prosecutor_risk_max=round(1.0 / min_n, 6) if min_n else 0.0,
        records_at_risk_above={
            str(t): round(int(row[f"r{i}"] or 0) / rows, 6) if rows else 0.0
            for i, t in enumerate(PROSECUTOR_THRESHOLDS)
        },
        discernibility=int(row["dm"] or 0),
    )
