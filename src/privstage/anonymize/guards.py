"""Release guards, computed on the output itself: k-anonymity, l-diversity, no plaintext PII.

They implement privstage's :class:`~privstage.guards.base.Guard` protocol (one Spark aggregation each,
counts only in the outcome), so the engine runs them after the stage and blocks the commit when they
fail. They deliberately do not import Great Expectations: ``privstage/guards/gx.py`` stays the only
module that does (a test enforces it). When the stage is wired, gx.py registers them under the GX
names ``expect_k_anonymity`` / ``expect_l_diversity`` / ``expect_no_plaintext_pii`` so a spec's
``expect_after`` can name them; the factories below already carry those names and arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from privstage.anonymize.discovery import pii_match
from privstage.anonymize.risk import class_stats
from privstage.guards.base import GuardContext, GuardOutcome

__all__ = [
    "DEFAULT_PII_KINDS",
    "KAnonymityGuard",
    "LDiversityGuard",
    "NoPlaintextPIIGuard",
    "expect_k_anonymity",
    "expect_l_diversity",
    "expect_no_plaintext_pii",
]

#: Kinds whose shape alone marks a direct identifier (checked by expect_no_plaintext_pii by default).
DEFAULT_PII_KINDS = ("email", "ssn", "credit_card", "iban", "phone", "ip_address")


@dataclass(frozen=True)
class KAnonymityGuard:
    """Every combination of the quasi-identifiers occurs at least ``k`` times in the data."""

    quasi_identifiers: tuple[str, ...]
    k: int
    blocking: bool = True
    name: str = "anonymize"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        from pyspark.sql import functions as F

        row = (
            class_stats(ctx.data, list(self.quasi_identifiers), None)
            .agg(
                F.min("n").alias("min_n"),
                F.sum(F.when(F.col("n") < self.k, F.col("n")).otherwise(0)).alias("rows_below"),
                F.count(F.lit(1)).alias("classes"),
            )
            .first()
        )
        smallest = int(row["min_n"] or 0)
        below = int(row["rows_below"] or 0)
        return [
            GuardOutcome(
                self.name, "expect_k_anonymity", below == 0, blocking=self.blocking,
                details={"k": self.k, "quasi_identifiers": list(self.quasi_identifiers), "smallest_class": smallest,
                         "classes": int(row["classes"] or 0), "rows_in_small_classes": below},
            )
        ]  # fmt: skip


@dataclass(frozen=True)
class LDiversityGuard:
    """Every class of the quasi-identifiers holds at least ``l`` distinct non-null sensitive values."""

    quasi_identifiers: tuple[str, ...]
    sensitive: str
    l: int  # noqa: E741
    blocking: bool = True
    name: str = "anonymize"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        from pyspark.sql import functions as F

        row = (
            class_stats(ctx.data, list(self.quasi_identifiers), self.sensitive)
            .agg(
                F.min("l").alias("min_l"),
                F.sum((F.col("l") < self.l).cast("long")).alias("classes_below"),
            )
            .first()
        )
        min_l = int(row["min_l"] or 0)
        below = int(row["classes_below"] or 0)
        return [
            GuardOutcome(
                self.name, "expect_l_diversity", below == 0, blocking=self.blocking, column=self.sensitive,
                details={"l": self.l, "quasi_identifiers": list(self.quasi_identifiers), "smallest_l": min_l,
                         "classes_below_l": below},
            )
        ]  # fmt: skip


@dataclass(frozen=True)
class NoPlaintextPIIGuard:
    """No value of the given columns matches a PII shape (with check digits for cards and IBANs)."""

    columns: tuple[str, ...]
    kinds: tuple[str, ...] = DEFAULT_PII_KINDS
    blocking: bool = True
    name: str = "anonymize"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        from pyspark.sql import functions as F

        aggs = [
            F.sum(pii_match(F.col(c), kind).cast("long")).alias(f"m{i}_{j}")
            for i, c in enumerate(self.columns)
            for j, kind in enumerate(self.kinds)
        ]
        row = ctx.data.agg(*aggs).first() if aggs else None
        out = []
        for i, c in enumerate(self.columns):
            found = {kind: int(row[f"m{i}_{j}"] or 0) for j, kind in enumerate(self.kinds)} if row else {}
            hits = {kind: n for kind, n in found.items() if n}
            out.append(
                GuardOutcome(
                    self.name, "expect_no_plaintext_pii", not hits, blocking=self.blocking, column=c,
                    details={"kinds_checked": list(self.kinds), "matching_values": hits},
                )
            )  # fmt: skip
        return out


def expect_k_anonymity(quasi_identifiers: list[str] | tuple[str, ...], k: int) -> KAnonymityGuard:
    """The guard behind the ``expect_k_anonymity`` expectation."""
    return KAnonymityGuard(tuple(quasi_identifiers), k)


def expect_l_diversity(quasi_identifiers: list[str] | tuple[str, ...], sensitive: str, l: int) -> LDiversityGuard:  # noqa: E741
    """The guard behind the ``expect_l_diversity`` expectation."""
    return LDiversityGuard(tuple(quasi_identifiers), sensitive, l)


def expect_no_plaintext_pii(
    columns: list[str] | tuple[str, ...], kinds: tuple[str, ...] = DEFAULT_PII_KINDS
) -> NoPlaintextPIIGuard:
    """The guard behind the ``expect_no_plaintext_pii`` expectation."""
    return NoPlaintextPIIGuard(tuple(columns), tuple(kinds))
