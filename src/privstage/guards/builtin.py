"""Built-in guards that stages run whatever the spec declares.

Each computes aggregates in Spark (one job per guard) and reports counts only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from privstage.guards.base import GuardContext, GuardOutcome

__all__ = [
    "NoNullsGuard",
    "NoRawValuesGuard",
    "NonEmptyGuard",
    "NullsPreservedGuard",
    "RowCountPreservedGuard",
]


@dataclass(frozen=True)
class NonEmptyGuard:
    """The data has at least one row (an empty input is almost always an upstream failure)."""

    name: str = "builtin"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        has_rows = ctx.data_stats().rows > 0
        return [GuardOutcome(self.name, "not_empty", has_rows, details={"has_rows": has_rows})]


@dataclass(frozen=True)
class NoNullsGuard:
    """The given columns hold no nulls."""

    columns: tuple[str, ...]
    name: str = "builtin"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        # The shared DataStats counts rows and these nulls in one job (run this guard before NonEmptyGuard).
        _, nulls = ctx.data_stats().counts(self.columns)
        return [
            GuardOutcome(self.name, "no_nulls", n == 0, column=c, details={"null_count": n})
            for c, n in zip(self.columns, nulls, strict=True)
        ]


@dataclass(frozen=True)
class RowCountPreservedGuard:
    """The output has exactly as many rows as the input."""

    name: str = "builtin"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        rows_in = ctx.input_data_stats().rows
        rows_out = ctx.data_stats().rows
        return [
            GuardOutcome(
                self.name,
                "row_count_preserved",
                rows_in == rows_out,
                details={"rows_in": rows_in, "rows_out": rows_out},
            )
        ]


@dataclass(frozen=True)
class NullsPreservedGuard:
    """Each transformed column has as many nulls as its source column (nulls stay null)."""

    pairs: tuple[tuple[str, str], ...]
    name: str = "builtin"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        _, nulls_in = ctx.input_data_stats().counts([a for a, _ in self.pairs])
        _, nulls_out = ctx.data_stats().counts([b for _, b in self.pairs])
        return [
            GuardOutcome(
                self.name,
                "nulls_preserved",
                n_in == n_out,
                column=out_col,
                details={"nulls_in": n_in, "nulls_out": n_out},
            )
            for (_, out_col), n_in, n_out in zip(self.pairs, nulls_in, nulls_out, strict=True)
        ]


@dataclass(frozen=True)
class NoRawValuesGuard:
    """No input value of a transformed column appears in its output column.

    Checked by a semi-join of the output values against the distinct input values (all pairs in
    one join), so it catches any pass-through, not just values of a known shape.

    Equal strings have equal lengths, so only input values whose length occurs in the output column
    can match. Pseudonyms have one length: the input side shrinks to (almost) nothing and is
    broadcast, instead of shuffling every distinct input value. A pass-through bug brings raw lengths
    into the output, so the narrowing never hides a leak.
    """

    #: Above this many distinct output lengths a column is joined unnarrowed.
    MAX_LENGTHS: ClassVar[int] = 1024
    #: Narrowed input sides up to this many rows are broadcast.
    BROADCAST_ROWS: ClassVar[int] = 2_000_000

    pairs: tuple[tuple[str, str], ...]
    raw_columns_must_be_absent: tuple[str, ...] = ()
    name: str = "builtin"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        from functools import reduce

        from pyspark.sql import functions as F

        assert ctx.input_data is not None, "an after-guard needs the stage input"
        outcomes: list[GuardOutcome] = []
        present = [c for c in self.raw_columns_must_be_absent if c in ctx.data.columns]
        for c in self.raw_columns_must_be_absent:
            outcomes.append(GuardOutcome(self.name, "raw_column_absent", c not in present, column=c, details={}))

        def tagged(df, side: int):  # type: ignore[no-untyped-def]
            parts = [
                df.select(F.lit(i).alias("__c"), F.col(pair[side]).cast("string").alias("__v"))
                for i, pair in enumerate(self.pairs)
            ]
            return reduce(lambda a, b: a.unionByName(b), parts).where(F.col("__v").isNotNull())

        lengths_row = ctx.data.select(
            *[
                F.slice(F.collect_set(F.length(F.col(out).cast("string"))), 1, self.MAX_LENGTHS + 1).alias(f"l{i}")
                for i, (_, out) in enumerate(self.pairs)
            ]
        ).first()
        narrowing = None
        for i, _ in enumerate(self.pairs):
            lengths = list(lengths_row[f"l{i}"] or []) if lengths_row else []
            too_many = len(lengths) > self.MAX_LENGTHS
            condition = F.lit(True) if too_many else F.length(F.col("__v")).isin([int(n) for n in lengths])
            clause = (F.col("__c") == F.lit(i)) & condition
            narrowing = clause if narrowing is None else narrowing | clause
        raw = tagged(ctx.input_data, 0).where(narrowing).distinct()
        if raw.count() <= self.BROADCAST_ROWS:
            raw = F.broadcast(raw)
        leaked = tagged(ctx.data, 1).join(raw, ["__c", "__v"], "left_semi").groupBy("__c").count().collect()
        counts = {int(r["__c"]): int(r["count"]) for r in leaked}
        for i, (_, out_col) in enumerate(self.pairs):
            n = counts.get(i, 0)
            outcomes.append(
                GuardOutcome(self.name, "no_raw_values", n == 0, column=out_col, details={"raw_value_matches": n})
            )
        return outcomes
