"""``he_aggregate``: the aggregator adds the parties' ciphertext datasets, holding no secret key.

Plan (before any ciphertext is read): the round is read from ``context`` and checked; the public
context is accepted for the aggregator role only (a context with a secret key raises
``HEParameterError``); the aggregator's manifest key and the party verification keys are fetched;
every input must be a ciphertext dataset with a manifest.

Produce: :meth:`privstage.he.Aggregator.aggregate` verifies every contribution (MAC when
``party_keys`` is given, round, context fingerprint, layout, parameters, the expected party set,
empty contributions, ciphertext digests in Spark) and adds them slot by slot in executors in a tree.
Forged, truncated, replayed, mismatched-context or empty contributions raise ``IntegrityError``
naming the party, and nothing is written.

Replays across runs are caught by a durable nonce store (:class:`privstage.he.nonces.NonceStore`, a
table in the budget ledger's database): nonces are checked before adding and consumed just before the
output commits, under this run's key, so a retry of the same run is not taken for a replay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privstage.errors import PrivstageError, SpecError
from privstage.guards.builtin import NonEmptyGuard
from privstage.stages._he import (
    STORED_SCHEMA,
    HEOutputGuard,
    Round,
    describe_round,
    load_round,
    private_dir,
    remove_private,
    staged_frame,
    stored_schema,
    with_stage,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from privstage.budget import BudgetLedger
    from privstage.he.context import PublicContext
    from privstage.he.roles import CiphertextDataset
    from privstage.keys import Key, KeyProvider
    from privstage.spec import HEAggregateStage, PipelineSpec

__all__ = ["HEAggregatePlan", "builtin_guards", "output_schema", "plan", "produce", "read_inputs"]


@dataclass
class HEAggregatePlan:
    """The aggregator's checked round, inputs and keys. Holds keys: never serialize it."""

    stage: HEAggregateStage
    round: Round
    public: PublicContext
    key: Key
    keys: KeyProvider
    inputs: list[str]
    output_path: str
    ledger: Callable[[], BudgetLedger]

    @property
    def key_versions(self) -> dict[str, int]:
        return {self.key.key_id: self.key.version}

    def describe(self) -> dict[str, Any]:
        return {
            "he": {
                "role": "aggregator",
                "aggregator_id": self.stage.aggregator_id,
                "contributions": len(self.inputs),
                "party_manifests_verified_here": self.stage.party_keys is not None,
                **describe_round(self.round),
            }
        }


def _input_paths(stage: HEAggregateStage, spec: PipelineSpec) -> list[str]:
    return [spec.dataset_path(source) for source in stage.inputs]


def read_inputs(
    stage: HEAggregateStage, spec: PipelineSpec, spark: SparkSession
) -> tuple[str, Callable[[], DataFrame]]:
    """Every party's stored ciphertexts, as one lazy frame (for the pre-guards and the report)."""
    from privstage.io import local_path

    paths = _input_paths(stage, spec)
    for path in paths:
        if not local_path(path).exists():
            raise SpecError(f"contribution {path} does not exist", stage=stage.name)
    return ", ".join(paths), lambda: spark.read.schema(STORED_SCHEMA).parquet(*paths)


def plan(stage: HEAggregateStage, schema: StructType, keys: KeyProvider, *, env: Any = None) -> HEAggregatePlan:
    """Check the round and the public context (no secret key), fetch keys, open every contribution's manifest.

    Raises:
        HEParameterError: the context holds a secret key; the round's parameters are insecure or unusable.
        OverflowRisk: more contributions than the round's parties, or bounds that overflow.
        IntegrityError: a contribution without a readable manifest (naming it).
        KeyUnavailable: a key cannot be fetched.
    """
    from privstage.errors import OverflowRisk
    from privstage.he.roles import CiphertextDataset

    spec = env.spec
    try:
        round_ = load_round(spec, stage.context, stage=stage.name)
        public = round_.accept_public("aggregator")
        key = keys.get(stage.key_id)
        for party, key_id in (stage.party_keys or {}).items():
            if party not in round_.parties:
                raise SpecError(f"party_keys names '{party}', not one of the round's parties {list(round_.parties)}")
            keys.get(key_id)
        paths = _input_paths(stage, spec)
        if len(paths) > len(round_.parties):
            raise OverflowRisk(
                f"{len(paths)} contributions; the round's plan covers at most {len(round_.parties)} parties"
            )
        for path in paths:
            CiphertextDataset.open(path, who=f"contribution {path}")
    except PrivstageError as exc:
        raise with_stage(exc, stage.name) from None
    return HEAggregatePlan(
        stage=stage,
        round=round_,
        public=public,
        key=key,
        keys=keys,
        inputs=paths,
        output_path=spec.resolve_path(stage.output.path),
        ledger=env.ledger,
    )


def output_schema(p: HEAggregatePlan, input_schema: StructType | None = None) -> StructType:
    return stored_schema()


def builtin_guards(p: HEAggregatePlan) -> tuple[list[Any], list[Any]]:
    layout = p.round.layout
    return [NonEmptyGuard()], [HEOutputGuard(layout_id=layout.layout_id, chunks=layout.chunks)]


def produce(df: DataFrame, p: HEAggregatePlan, *, spark: SparkSession, run: Any) -> Any:
    """Verify and add the contributions; the engine stages the aggregate and its manifest."""
    from privstage.he.manifest import MANIFEST_FILE
    from privstage.he.nonces import NonceStore
    from privstage.he.roles import Aggregator, CiphertextDataset
    from privstage.io import local_path
    from privstage.stages.dp_aggregate import Production

    datasets: list[CiphertextDataset] = [CiphertextDataset.open(path, who=f"contribution {path}") for path in p.inputs]
    nonces = NonceStore(p.ledger(), verifier=f"aggregator:{p.stage.aggregator_id}", consumer=run.run_key)
    for dataset in datasets:
        nonces.check(dataset.manifest)
    aggregator = Aggregator(p.stage.aggregator_id, p.public, plan=p.round.plan, key=p.key)
    private = private_dir(p.output_path)
    try:
        written = aggregator.aggregate(
            spark,
            datasets,
            private,
            layout=p.round.layout,
            round_id=p.round.round_id,
            party_keys=p.keys if p.stage.party_keys is not None else None,
            party_key_ids=p.stage.party_keys,
            expected_parties=list(p.round.parties),
        )
        manifest_bytes = (local_path(private) / MANIFEST_FILE).read_bytes()
    except BaseException:
        remove_private(private)
        raise

    def before_commit() -> list[Any]:
        from privstage.guards.base import GuardOutcome

        nonces.consume([d.manifest for d in datasets])
        remove_private(private)
        return [GuardOutcome("builtin", "contributions_consumed", True, details={"parties": len(datasets)})]

    body = written.manifest.body
    details = {
        **p.describe(),
        "he_aggregate": {
            "parties": sorted(d.manifest.owner for d in datasets),
            "rows": body["rows"],
            "ciphertexts": body["ciphertexts"],
        },
    }
    return Production(
        frame=staged_frame(spark, private),
        files={MANIFEST_FILE: manifest_bytes},
        details=details,
        before_commit=before_commit,
        on_failure=lambda: remove_private(private),
    )
