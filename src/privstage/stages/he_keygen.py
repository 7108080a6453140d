"""``he_keygen``: the key holder creates the context of a round and publishes its public part.

Plan (no data, no keys created): the round's parameters are checked against the 128-bit security
table, the layout is declared and the sum planned for the declared parties (``HEParameterError`` /
``OverflowRisk`` with the limit in the message); the sealing key is fetched (``KeyUnavailable``).

Produce: new keys; the public context (public key only, verified to deserialize without a secret key)
and the round file go beside a one-row output naming the round; the secret context is sealed with
AES-256-GCM under a key derived from ``secret_key_id`` and stored under ``secret_dir`` (by fingerprint,
never inside the output, which is shipped to parties and the aggregator), just before the output commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privstage.errors import PrivstageError
from privstage.guards.base import GuardOutcome
from privstage.stages._he import (
    PUBLIC_CONTEXT_FILE,
    ROUND_FILE,
    HEOutputGuard,
    SecretPlacementGuard,
    round_document,
    secret_path,
    with_stage,
    write_secret,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from privstage.he.layout import GroupLayout
    from privstage.he.params import HEParams, SumPlan
    from privstage.keys import Key, KeyProvider
    from privstage.spec import HEKeygenStage, PipelineSpec

__all__ = ["HEKeygenPlan", "builtin_guards", "output_schema", "plan", "produce", "read_inputs"]

OUTPUT_SCHEMA = "round_id string, scheme string, context_fingerprint string, layout_id string, parties int"


@dataclass
class HEKeygenPlan:
    """The checked round. Holds the sealing key: never serialize it."""

    stage: HEKeygenStage
    params: HEParams
    layout: GroupLayout
    sum_plan: SumPlan
    key: Key
    secret_dir: Callable[[str], Any]
    output_path: str

    @property
    def key_versions(self) -> dict[str, int]:
        return {self.key.key_id: self.key.version}

    def describe(self) -> dict[str, Any]:
        return {
            "he": {
                "role": "key holder",
                "round_id": self.stage.round.round_id,
                "params": self.params.to_dict(),
                "layout_id": self.layout.layout_id,
                "parties": list(self.stage.round.parties),
                "error_bound": dict(self.sum_plan.error_bound),
            }
        }


def read_inputs(stage: HEKeygenStage, spec: PipelineSpec, spark: SparkSession) -> tuple[str, Callable[[], DataFrame]]:
    """Key generation reads no data: an empty frame."""
    return "-", lambda: spark.createDataFrame([], "_no_input string")


def plan(stage: HEKeygenStage, schema: StructType, keys: KeyProvider, *, env: Any = None) -> HEKeygenPlan:
    """Check the parameters and plan the sum for the declared parties; fetch the sealing key.

    Raises:
        HEParameterError: parameters below 128-bit security or unusable (CKKS depth, scale, precision).
        OverflowRisk: BFV parties * bound beyond (t-1)/2, or CKKS totals beyond the scale's headroom.
        KeyUnavailable: the sealing key cannot be fetched.
    """
    from privstage.he.layout import GroupLayout

    spec = env.spec  # secret_dir resolves against the pipeline
    try:
        params = stage.round.params.to_params()
        layout = GroupLayout.declare(stage.round.group_keys, [m.to_measure() for m in stage.round.measures], params)
        sum_plan = layout.plan(params, parties=len(stage.round.parties))
        key = keys.get(stage.secret_key_id)
    except PrivstageError as exc:
        raise with_stage(exc, stage.name) from None
    return HEKeygenPlan(
        stage=stage,
        params=params,
        layout=layout,
        sum_plan=sum_plan,
        key=key,
        secret_dir=lambda fp: secret_path(spec, stage.secret_dir, fp),
        output_path=spec.resolve_path(stage.output.path),
    )


def output_schema(p: HEKeygenPlan, input_schema: StructType | None = None) -> StructType:
    """One row naming the round: id, scheme, context fingerprint, layout id, number of parties."""
    from pyspark.sql import types as T

    names = ("round_id", "scheme", "context_fingerprint", "layout_id")
    fields = [T.StructField(n, T.StringType()) for n in names] + [T.StructField("parties", T.IntegerType())]
    return T.StructType(fields)


def builtin_guards(p: HEKeygenPlan) -> tuple[list[Any], list[Any]]:
    """Before: the secret's folder is outside the shipped output. After: the output is the round's one row."""
    secret_dir = str(p.secret_dir("x").parent)
    return [SecretPlacementGuard(secret_dir, p.output_path)], [HEOutputGuard(expected_rows=1)]


def produce(df: DataFrame, p: HEKeygenPlan, *, spark: SparkSession, run: Any) -> Any:
    """New keys; the public context and round beside the output; the sealed secret stored before commit."""
    from privstage.he.context import KeyHolder
    from privstage.stages.dp_aggregate import Production

    holder = KeyHolder.create(p.params)
    public = holder.public_context()  # deserialized and checked: no secret key
    sealed = holder.seal(p.key)
    fingerprint = public.fingerprint
    round_ = p.stage.round
    files = {
        PUBLIC_CONTEXT_FILE: public.data,
        ROUND_FILE: round_document(round_.round_id, p.layout, p.sum_plan, tuple(round_.parties), fingerprint),
    }
    frame = spark.createDataFrame(
        [(round_.round_id, p.params.scheme, fingerprint, p.layout.layout_id, len(round_.parties))], OUTPUT_SCHEMA
    ).coalesce(1)
    target = p.secret_dir(fingerprint)

    def before_commit() -> list[GuardOutcome]:
        write_secret(target, sealed)
        return [GuardOutcome("builtin", "secret_context_sealed", True, details={"key_id": p.key.key_id})]

    details = p.describe()
    details["he"]["context_fingerprint"] = fingerprint
    return Production(frame=frame, files=files, details=details, before_commit=before_commit)
