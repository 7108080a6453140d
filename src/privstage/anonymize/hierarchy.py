"""Generalization hierarchies as Spark Column expressions (built-ins only, no Python UDF).

``labels(rule_hierarchy, column)`` returns one string Column per level. Every level maps a value the
hierarchy does not cover (null, out of range, unseen, malformed) to :data:`~privstage.anonymize.config.TOP`,
so a raw value never passes through a hierarchy it does not belong to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privstage.anonymize.config import (
    TOP,
    AgeHierarchy,
    CategoricalHierarchy,
    DateHierarchy,
    IntervalHierarchy,
    PrefixHierarchy,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column

__all__ = ["base_value", "labels", "level_labels"]


def _num_text(value: Column, integral: bool) -> Column:
    """A number as text: whole numbers without a decimal point when the hierarchy is integral."""
    return value.cast("long").cast("string") if integral else value.cast("string")


def _bands(value: Column, lower: float, upper: float, widths: tuple[float, ...], integral: bool) -> list[Column]:
    from pyspark.sql import functions as F

    out = []
    for width in widths:
        lo = F.lit(lower) + F.floor((value - F.lit(lower)) / F.lit(width)) * F.lit(width)
        hi = F.least(lo + F.lit(width), F.lit(upper))
        out.append(F.concat(F.lit("["), _num_text(lo, integral), F.lit(", "), _num_text(hi, integral), F.lit(")")))
    return out


def base_value(hierarchy: object, value: Column, *, reference: Column | None = None) -> Column:
    """The level-0 value the labels are computed from; null for anything the hierarchy does not cover.

    Computed once per row in its own projection so that the level labels do not repeat it.
    """
    from pyspark.sql import functions as F

    if isinstance(hierarchy, IntervalHierarchy):
        number = value.try_cast("double")
        return F.when((number >= F.lit(hierarchy.lower)) & (number < F.lit(hierarchy.upper)), number)
    if isinstance(hierarchy, AgeHierarchy):
        ref = reference if hierarchy.reference_column else F.lit(hierarchy.reference_date)
        age = F.floor(F.months_between(ref.cast("date"), value.cast("date")) / F.lit(12))
        return F.when((age >= 0) & (age < hierarchy.max_age), age.cast("double"))
    if isinstance(hierarchy, DateHierarchy):
        return value.cast("date")
    if isinstance(hierarchy, PrefixHierarchy):
        text = value.cast("string")
        return F.when(text.rlike("^(?:" + hierarchy.pattern + ")$"), text)
    if isinstance(hierarchy, CategoricalHierarchy):
        chains = hierarchy.chains()
        text = value.cast("string")
        return F.when(text.isin(list(chains)), text)
    raise TypeError(f"unknown hierarchy {type(hierarchy).__name__}")


def level_labels(hierarchy: object, base: Column) -> list[Column]:
    """The label of a :func:`base_value` column at every level (level 0 first, TOP last)."""
    from pyspark.sql import functions as F

    def top_when_null(levels: list[Column]) -> list[Column]:
        return [F.when(base.isNull(), F.lit(TOP)).otherwise(level) for level in levels] + [F.lit(TOP)]

    if isinstance(hierarchy, IntervalHierarchy):
        integral = all(float(x).is_integer() for x in (hierarchy.lower, hierarchy.upper, *hierarchy.widths))
        bands = _bands(base, hierarchy.lower, hierarchy.upper, hierarchy.widths, integral)
        exact = F.when(base == F.floor(base), F.floor(base).cast("string")).otherwise(base.cast("string"))
        return top_when_null([exact, *bands])
    if isinstance(hierarchy, AgeHierarchy):
        widths = tuple(float(w) for w in hierarchy.widths)
        return top_when_null([_num_text(base, True), *_bands(base, 0.0, float(hierarchy.max_age), widths, True)])
    if isinstance(hierarchy, DateHierarchy):
        out = [F.date_format(base, "yyyy-MM-dd")]
        for unit in hierarchy.units:
            if unit == "month":
                out.append(F.date_format(base, "yyyy-MM"))
            elif unit == "quarter":
                out.append(F.concat(F.date_format(base, "yyyy"), F.lit("-Q"), F.quarter(base).cast("string")))
            else:
                out.append(F.date_format(base, "yyyy"))
        return top_when_null(out)
    if isinstance(hierarchy, PrefixHierarchy):
        out = [base]
        for keep in hierarchy.keep:
            head = F.substring(base, 1, keep)
            if hierarchy.pad:
                head = F.concat(head, F.repeat(F.lit("*"), F.greatest(F.length(base) - keep, F.lit(0))))
            out.append(head)
        return top_when_null(out)
    if isinstance(hierarchy, CategoricalHierarchy):
        chains = hierarchy.chains()
        depth = len(next(iter(chains.values())))
        out = [base]
        for i in range(depth - 1):  # the chain's last label is TOP, added below
            mapping = F.create_map(*[F.lit(x) for v, c in chains.items() for x in (v, c[i])])
            out.append(F.element_at(mapping, base))
        return top_when_null(out)
    raise TypeError(f"unknown hierarchy {type(hierarchy).__name__}")


def labels(hierarchy: object, value: Column, *, reference: Column | None = None) -> list[Column]:
    """The label Column of ``value`` at every level of ``hierarchy`` (level 0 first, TOP last).

    Convenience for one-off use; :func:`base_value` + :func:`level_labels` in two projections is
    cheaper when several levels are needed.
    """
    return level_labels(hierarchy, base_value(hierarchy, value, reference=reference))
