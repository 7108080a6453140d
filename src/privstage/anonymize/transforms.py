"""Per-column transforms as Spark Column expressions (built-ins; the HMAC runs in the JVM).

Keyed work reuses :mod:`privstage.stages.pseudonymize`: pseudonyms are its HMAC-SHA-256 exactly, and
date shifting takes its offset from the same HMAC under a key derived for the purpose
(``Key.derive("anonymize/date-shift")``), so a shift can never be linked to a pseudonym of the same id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privstage.anonymize.config import (
    AnonymizeConfig,
    DateShiftRule,
    GeneralizeRule,
    MaskRule,
    PseudonymizeRule,
    TopBottomCodeRule,
)
from privstage.anonymize.hierarchy import labels
from privstage.errors import SpecError
from privstage.keys.base import Key, KeyProvider

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["apply_keyed", "date_shift_days", "mask", "resolve_keys", "top_bottom_code"]

_SHIFT_PREFIX = "__privstage_shift_"
_SHIFT_PURPOSE = "anonymize/date-shift"


def resolve_keys(config: AnonymizeConfig, keys: KeyProvider | None, *, stage: str | None = None) -> dict[str, Key]:
    """Fetch every key the config names (before data is read). Raises KeyUnavailable / SpecError."""
    ids = sorted(config.key_ids())
    if ids and keys is None:
        raise SpecError(f"rules need keys {ids} but no key provider was given", stage=stage)
    resolved: dict[str, Key] = {}
    for key_id in ids:
        try:
            resolved[key_id] = keys.get(key_id)  # type: ignore[union-attr]
        except Exception as exc:
            exc.stage = getattr(exc, "stage", None) or stage  # type: ignore[attr-defined]
            raise
    return resolved


def mask(value: Column, rule: MaskRule) -> Column:
    """Masked text; nulls stay null."""
    from pyspark.sql import functions as F

    text = value.cast("string")
    maskable = r"[\p{L}\p{N}]" if rule.keep_separators else r"(?s)."
    char = rule.char.replace("\\", "\\\\").replace("$", "\\$")
    if rule.mode == "fixed":
        return F.regexp_replace(text, maskable, char)
    if rule.mode == "shape":
        return F.regexp_replace(F.regexp_replace(F.regexp_replace(text, r"\p{Lu}", "A"), r"\p{Ll}", "a"), r"\p{N}", "9")
    n = rule.keep_last
    if n == 0:
        return F.regexp_replace(text, maskable, char)
    # mask every maskable character that has at least n maskable characters after it
    after = rf"(?=(?:[^\p{{L}}\p{{N}}]*[\p{{L}}\p{{N}}]){{{n}}})" if rule.keep_separators else rf"(?s)(?=.{{{n}}})"
    return F.regexp_replace(text, maskable + after, char)


def top_bottom_code(value: Column, rule: TopBottomCodeRule) -> Column:
    from pyspark.sql import functions as F

    out = value
    if rule.top is not None:
        out = F.when(out > F.lit(rule.top), F.lit(rule.top).cast(value_type_hint(rule))).otherwise(out)
    if rule.bottom is not None:
        out = F.when(out < F.lit(rule.bottom), F.lit(rule.bottom).cast(value_type_hint(rule))).otherwise(out)
    return out


def value_type_hint(rule: TopBottomCodeRule) -> str:
    bounds = [b for b in (rule.bottom, rule.top) if b is not None]
    return "long" if all(float(b).is_integer() for b in bounds) else "double"


def date_shift_days(pseudonym_hex: Column, max_days: int) -> Column:
    """The shift in ``[-max_days, max_days]`` from the first 32 bits of a hex HMAC."""
    from pyspark.sql import functions as F

    bits = F.conv(F.substring(pseudonym_hex, 1, 8), 16, 10).cast("long")
    return (F.pmod(bits, F.lit(2 * max_days + 1)) - F.lit(max_days)).cast("int")


def apply_keyed(
    df: DataFrame,
    config: AnonymizeConfig,
    resolved: dict[str, Key],
    *,
    spark: SparkSession,
    stage: str = "anonymize",
) -> DataFrame:
    """Add pseudonym columns (replacing their source) and per-subject shift offsets in one HMAC pass.

    Returns ``df`` with pseudonymized columns in place and, for each date-shift rule, a hidden
    integer column ``__privstage_shift_<n>`` holding that row's offset in days.
    """
    from privstage.spec import PseudonymizeStage
    from privstage.stages import pseudonymize as ps

    pseudo = [r for r in config.columns if isinstance(r, PseudonymizeRule)]
    shifts = [r for r in config.columns if isinstance(r, DateShiftRule)]
    if not pseudo and not shifts:
        return df
    columns = [
        {"column": r.column, "key_id": r.key_id, "case_fold": r.case_fold, "encoding": r.encoding, "bits": r.bits}
        for r in pseudo
    ]
    keys = {r.key_id: resolved[r.key_id] for r in pseudo}
    work = df
    for i, rule in enumerate(shifts):
        hidden = f"{_SHIFT_PREFIX}{i}"
        work = work.withColumn(hidden, df[rule.subject_column].cast("string"))
        derived_id = f"{rule.key_id}.date-shift"
        parent = resolved[rule.key_id]
        keys[derived_id] = Key(derived_id, parent.version, parent.derive(_SHIFT_PURPOSE))
        columns.append({"column": hidden, "key_id": derived_id})
    spec = PseudonymizeStage.model_validate(
        {
            "name": stage,
            "kind": "pseudonymize",
            "input": {"path": "unused"},
            "output": {"path": "unused"},
            "columns": columns,
        }
    )
    plan = ps.PseudonymizePlan(stage=spec, keys=keys, input_columns=tuple(work.columns))
    out = ps.apply(work, plan, spark=spark)
    for i, rule in enumerate(shifts):
        hidden = f"{_SHIFT_PREFIX}{i}"
        out = out.withColumn(hidden, date_shift_days(out[hidden], rule.max_days))
    return out


def shift_column(i: int) -> str:
    return f"{_SHIFT_PREFIX}{i}"


def fixed_generalization(value: Column, rule: GeneralizeRule, reference: Column | None) -> Column:
    return labels(rule.hierarchy, value, reference=reference)[rule.level]


def shifted(value: Column, offset: Column, dtype: str) -> Column:
    """A date or timestamp moved by ``offset`` days; null when the subject is null."""
    from pyspark.sql import functions as F

    if dtype == "date":
        return F.date_add(value, offset)
    return value + F.make_dt_interval(offset)
