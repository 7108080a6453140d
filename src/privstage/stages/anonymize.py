"""The ``anonymize`` stage: per-column transforms and enforced k-anonymity / l-diversity on Spark.

The stage is a thin wrapper over :func:`privstage.anonymize.anonymize` fitted to the engine:

* ``plan`` checks every rule against the input schema (schema drift: a column no rule names is dropped
  or refused as ``unlisted`` says, never passed through) and fetches the pseudonym and date-shift keys,
  before any data is read.
* ``produce`` runs the lattice search and hands the engine the release to stage, with the risk and
  utility report (counts, sizes, shares and levels only; no value) as the stage manifest's
  ``details["anonymize"]``. A model that cannot be met raises
  :class:`~privstage.anonymize.AnonymityNotAchievable` (naming the model and the best k reached) before
  anything is staged.
* ``builtin_guards`` re-check the model on the STAGED output (k-anonymity, l-diversity, no value shaped
  like a direct identifier in any text column): the engine runs them after the write and a failure
  blocks the commit, so the release is proven on what is actually written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from privstage.anonymize.core import AnonymizationReport, anonymize, check_schema, release_schema
from privstage.anonymize.guards import KAnonymityGuard, LDiversityGuard, NoPlaintextPIIGuard
from privstage.anonymize.transforms import resolve_keys
from privstage.errors import KeyUnavailable, SpecError
from privstage.keys.base import Key

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from privstage.guards.base import Guard
    from privstage.keys.base import KeyProvider
    from privstage.spec import AnonymizeStage

__all__ = ["AnonymizePlan", "Production", "builtin_guards", "output_schema", "plan", "produce", "summary"]


class _PlannedKeys:
    """The keys fetched at plan time, served to :func:`anonymize` (the run uses exactly the planned versions)."""

    def __init__(self, keys: Mapping[str, Key]) -> None:
        self._keys = dict(keys)

    def get(self, key_id: str, version: int | None = None) -> Key:
        key = self._keys.get(key_id)
        if key is None or (version is not None and key.version != version):
            raise KeyUnavailable(f"key '{key_id}' was not resolved when the stage was planned", key_id=key_id)
        return key

    def versions(self, key_id: str) -> list[int]:
        return [self._keys[key_id].version] if key_id in self._keys else []

    def describe(self) -> str:
        return "keys resolved at plan time"

    def __repr__(self) -> str:
        return f"_PlannedKeys({sorted(self._keys)})"


@dataclass
class AnonymizePlan:
    """What the stage resolved before reading data. Holds keys: never serialize it."""

    stage: AnonymizeStage
    keys: Mapping[str, Key] = field(repr=False)
    input_columns: tuple[str, ...]
    dropped_unlisted: tuple[str, ...]
    output_schema: StructType
    report: AnonymizationReport | None = None  # set by produce

    @property
    def key_versions(self) -> dict[str, int]:
        return {key_id: key.version for key_id, key in sorted(self.keys.items())}

    @property
    def quasi_identifiers(self) -> tuple[str, ...]:
        """The quasi-identifier columns as the release names them."""
        return tuple(r.output_column or r.column for r in self.stage.quasi_identifiers)


@dataclass
class Production:
    """What the stage hands the engine: the release to stage and the report for the manifest."""

    frame: DataFrame
    files: dict[str, bytes] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    before_commit: Any = None
    on_failure: Any = None


def plan(stage: AnonymizeStage, schema: StructType, keys: KeyProvider, *, env: Any = None) -> AnonymizePlan:
    """Check the rules against the input schema and fetch keys. No data is read.

    Raises:
        SpecError: a rule names a missing column or one of the wrong type; an input column no rule names
            while ``unlisted: error`` (schema drift); a sensitive column not in the input.
        KeyUnavailable: a pseudonym or date-shift key id is not in the provider.
    """
    names = list(schema.fieldNames())
    for name in stage.sensitive_columns:
        if name not in names:
            raise SpecError(f"sensitive column '{name}' is not in the input", stage=stage.name)
    unlisted = check_schema(stage, schema, stage=stage.name)
    resolved = resolve_keys(stage, keys, stage=stage.name)
    spark = getattr(env, "spark", None)
    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
    return AnonymizePlan(
        stage=stage,
        keys=resolved,
        input_columns=tuple(names),
        dropped_unlisted=tuple(unlisted),
        output_schema=release_schema(stage, schema, spark=spark),
    )


def output_schema(p: AnonymizePlan, input_schema: StructType | None = None) -> StructType:
    """The release's schema: the input's columns in order, minus dropped ones, renamed where a rule says so."""
    return p.output_schema


def summary(report: AnonymizationReport, p: AnonymizePlan) -> dict[str, Any]:
    """The risk and utility report for manifests, XCom and metadata: counts, shares and levels, no value."""
    out = report.to_dict()
    out["quasi_identifiers"] = list(p.quasi_identifiers)
    out["sensitive"] = p.stage.sensitive
    out["max_suppression"] = p.stage.max_suppression
    out["null_policy"] = p.stage.null_policy
    out["dropped_unlisted"] = list(p.dropped_unlisted)
    return out


def produce(df: DataFrame, p: AnonymizePlan, *, spark: SparkSession, run: Any = None) -> Production:
    """Search the generalization, build the release (lazy) and its report.

    Raises:
        AnonymityNotAchievable: fewer rows than k, or no generalization meets the model within the
            suppression limit (names the model and the best k reached); nothing is staged.
    """
    stage = p.stage
    # The report's class figures come from the count table (the release's classes exactly, without another pass
    # over the rows); the after-guards then measure k and l again on the written release and block on failure.
    result = anonymize(df, stage, spark=spark, keys=_PlannedKeys(p.keys), stage=stage.name, measure="classes")
    p.report = result.report
    return Production(frame=result.data, details={"anonymize": summary(result.report, p)})


def builtin_guards(p: AnonymizePlan) -> tuple[list[Guard], list[Guard]]:
    """After the write, on the staged release: k-anonymity, l-diversity (when declared), no plaintext PII.

    No before-guard: an input smaller than k is refused by the stage itself with the model and the best k.
    """
    from pyspark.sql.types import StringType

    stage = p.stage
    after: list[Guard] = [KAnonymityGuard(p.quasi_identifiers, stage.k)]
    if stage.l is not None and stage.sensitive is not None:
        after.append(LDiversityGuard(p.quasi_identifiers, stage.sensitive, stage.l))
    # Every released text column except the generalized quasi-identifiers (their labels are checked by k).
    text = tuple(
        f.name
        for f in p.output_schema.fields
        if isinstance(f.dataType, StringType) and f.name not in p.quasi_identifiers
    )
    if text:
        after.append(NoPlaintextPIIGuard(text))
    return [], after
