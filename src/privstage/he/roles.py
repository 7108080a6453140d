"""The three roles of a homomorphic sum over Spark DataFrames: party, aggregator, key holder.

* :class:`Party` (holds a public context and its own manifest key): computes per-group sums in Spark
  (a DataFrame aggregate, never row-level data on the driver) or takes a value vector, packs it into
  ciphertexts in executors, writes the ciphertext dataset (Parquet: ``chunk``, ``ciphertext`` bytes,
  counts) into a staging directory, checks it, writes the authenticated manifest from what was
  actually written (encryption is randomized: digests must come from the stored bytes, not from a
  recomputation), and commits atomically.
* :class:`Aggregator` (holds a public context and verification keys, no secret key): verifies every
  contribution's manifest and ciphertext digests, adds the ciphertexts slot by slot in a tree in
  executors, and commits the aggregate with its own authenticated manifest.
* :func:`decrypt_sums` (the key holder, :class:`~privstage.he.context.KeyHolder`): verifies the
  aggregate, decrypts one ciphertext per chunk, and checks the result against the plan (declared
  ranges, zero padding, the CKKS grid) before :mod:`~privstage.he.release` rounds and releases it.

Every check runs before anything is committed; failures raise typed errors naming the party.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from privstage import io
from privstage.errors import (
    GuardFailed,
    HEParameterError,
    IntegrityError,
    OverflowRisk,
    PrivstageError,
    SpecError,
    wrap_library_error,
)
from privstage.he.context import KeyHolder, PublicContext
from privstage.he.layout import GroupLayout, Layout, VectorLayout
from privstage.he.manifest import AGGREGATE_FORMAT, CONTRIBUTION_FORMAT, Manifest, ReplayGuard, resolve_key
from privstage.he.params import BFVParams, CKKSParams, SumPlan
from privstage.he.spark_ops import ADD_SCHEMA, PACK_SCHEMA, make_adder, make_packer

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from privstage.keys import Key, KeyProvider

__all__ = ["Aggregator", "CiphertextDataset", "DecryptedSums", "Party", "decrypt_sums"]

_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_STORED = "chunk int, ciphertext binary, layout_id string"
#: Group layouts up to this many ciphertexts are packed by one task.
_SINGLE_TASK_CHUNKS = 16


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or not set(value) <= _ID_CHARS or len(value) > 128:
        raise SpecError(f"{what} must be 1-128 letters, digits, '_', '-' or '.'")
    return value


def _plan_matches(plan: SumPlan, layout: Layout) -> None:
    layout.check_params(plan.params)
    names = {m.name for m in layout.measures}
    if set(plan.bounds) != names:
        raise HEParameterError(f"the plan covers measures {sorted(plan.bounds)}, the layout has {sorted(names)}")
    for m in layout.measures:
        if plan.bounds[m.name] != m.bound or plan.decimals[m.name] != m.decimals:
            raise HEParameterError(f"measure '{m.name}': the plan's bound or decimals differ from the layout's")


def _packed_bounds(plan: SumPlan, layout: Layout) -> list[float] | list[int]:
    if isinstance(plan.params, BFVParams):
        return [int(m.bound * (Decimal(10) ** m.decimals)) for m in layout.measures]
    return [float(m.bound) for m in layout.measures]


def _block(layout: Layout) -> int:
    return len(layout.keys) if isinstance(layout, GroupLayout) else layout.length


@dataclass(frozen=True)
class CiphertextDataset:
    """A committed ciphertext dataset: a directory of Parquet files and its manifest."""

    path: str
    manifest: Manifest

    @classmethod
    def open(cls, path: str | Path, *, who: str) -> CiphertextDataset:
        return cls(path=str(path), manifest=Manifest.read(io.local_path(str(path)), who=who))

    def read(self, spark: SparkSession) -> DataFrame:
        return spark.read.schema(_STORED).parquet(self.path).select("chunk", "ciphertext", "layout_id")


def _reduce_partitions(spark: SparkSession, layout: Layout) -> int:
    """Partitions of a by-chunk shuffle: no more than chunks, nor than the session's shuffle partitions
    (each task starts a Python worker and loads the context, so a task per chunk costs more than it saves)."""
    try:
        configured = int(spark.conf.get("spark.sql.shuffle.partitions") or 8)
    except (TypeError, ValueError):
        configured = 8
    return max(1, min(layout.chunks, configured))


@contextlib.contextmanager
def _library_errors(what: str) -> Iterator[None]:
    """Spark and TenSEAL failures become retryable StageExecutionErrors without their (data-bearing) messages."""
    try:
        yield
    except PrivstageError:
        raise
    except Exception as exc:
        raise wrap_library_error(exc, f"{what} failed in Spark or TenSEAL") from None


def _write_staged(df: DataFrame, staging: str, layout: Layout) -> None:
    """Write ciphertext rows, each tagged with the layout id, uncompressed (ciphertexts do not compress)."""
    from pyspark.sql import functions as F

    df.withColumn("layout_id", F.lit(layout.layout_id)).write.option("compression", "none").parquet(staging)


def _stream(df: DataFrame, what: str) -> Iterator[Any]:
    """One row at a time to the driver (only used for aggregates: one ciphertext per chunk); Spark errors wrapped."""
    rows = df.toLocalIterator()
    while True:
        with _library_errors(what):
            try:
                row = next(rows)
            except StopIteration:
                return
        yield row


def _verify_digests(spark: SparkSession, data: DataFrame, expected: list[tuple[str, int, str]], layout_id: str) -> None:
    """Compare ``(party, chunk, digest, layout id)`` of stored ciphertexts with the manifests' lists, in Spark.

    Raises:
        IntegrityError: naming every party with a missing (truncated), unexpected (forged, tampered)
            or duplicated (replayed) ciphertext.
    """
    from pyspark.sql import functions as F

    stored = (
        data.select("party", "chunk", F.sha2("ciphertext", 256).alias("digest"), "layout_id")
        .groupBy("party", "chunk", "digest", "layout_id")
        .agg(F.count(F.lit(1)).alias("stored"))
    )
    listed = spark.createDataFrame(
        [(*row, layout_id) for row in expected], "party string, chunk int, digest string, layout_id string"
    ).withColumn("listed", F.lit(1))
    joined = stored.join(listed, ["party", "chunk", "digest", "layout_id"], "full_outer")
    problems = (
        joined.where(F.col("stored").isNull() | F.col("listed").isNull() | (F.col("stored") > 1))
        .select(
            "party",
            F.when(F.col("stored").isNull(), "missing")
            .when(F.col("listed").isNull(), "unlisted")
            .otherwise("duplicated")
            .alias("problem"),
        )
        .groupBy("party", "problem")
        .count()
        .collect()
    )
    if problems:
        found: dict[str, list[str]] = {}
        for row in problems:
            found.setdefault(row["party"], []).append(f"{row['count']} {row['problem']}")
        detail = "; ".join(f"party '{p}': " + ", ".join(sorted(v)) for p, v in sorted(found.items()))
        raise IntegrityError(
            "ciphertexts do not match their manifests (missing: truncated; unlisted: forged or tampered; "
            f"duplicated: replayed): {detail}"
        )


def _raise_unreadable(spark: SparkSession, datasets: Sequence[CiphertextDataset], exc: BaseException) -> None:
    """Name the party whose dataset Spark cannot read (checksum or Parquet damage), else wrap the error."""
    from pyspark.sql import functions as F

    for dataset in datasets:
        try:
            dataset.read(spark).select(F.sha2("ciphertext", 256)).collect()
        except Exception:
            raise IntegrityError(
                f"party '{dataset.manifest.owner}': the ciphertext dataset cannot be read (damaged or altered files)"
            ) from None
    raise wrap_library_error(exc, "verifying ciphertext digests failed") from None


class Party:
    """A contributing party: encrypts under a public context only.

    Args:
        party_id: Public id of the party.
        public_context: The key holder's public context (bytes or :class:`PublicContext`); a context
            holding a secret key is refused.
        plan: The checked plan (parameters, party count, bounds).
        key: The party's manifest key (from its KeyProvider).
    """

    def __init__(self, party_id: str, public_context: PublicContext | bytes, *, plan: SumPlan, key: Key) -> None:
        self.party_id = _check_id(party_id, "party id")
        self.plan = plan
        self.context = PublicContext.accept(public_context, plan.params, role="party")
        self._key = key

    def __repr__(self) -> str:
        return f"Party({self.party_id!r}, context={self.context.fingerprint[:16]})"

    # -- packing -------------------------------------------------------------------------------
    def _packer(self, layout: Layout, quantize: bool) -> Any:
        params = self.plan.params
        return make_packer(
            context_bytes=self.context.data,
            fingerprint=self.context.fingerprint,
            scheme=params.scheme,
            slots=params.slots,
            size=layout.size,
            block=_block(layout),
            bounds=_packed_bounds(self.plan, layout),
            quantize_decimals=[m.decimals for m in layout.measures] if quantize else None,
        )

    def pack_groups(self, df: DataFrame, *, group_column: str, layout: GroupLayout) -> DataFrame:
        """Per-group sums in Spark, packed into ciphertexts in executors (lazy; PACK_SCHEMA rows).

        Sums are exact decimals (``decimal(38, decimals)``, half-up quantized), counts are row counts;
        rows whose group key (cast to string) is not declared are counted as unknown and refused at
        :meth:`write`. Every chunk of the layout gets a ciphertext, zeros where the party has no group.
        """
        from pyspark.sql import functions as F
        from pyspark.sql.types import DecimalType

        _plan_matches(self.plan, layout)
        if group_column not in df.columns:
            raise SpecError(f"party '{self.party_id}': no group column '{group_column}'")
        for m in layout.measures:
            if m.kind == "sum" and m.column not in df.columns:
                raise SpecError(f"party '{self.party_id}': measure '{m.name}' sums missing column '{m.column}'")
        spark = df.sparkSession
        aggs = [F.count(F.lit(1)).alias("_rows")]
        for i, m in enumerate(layout.measures):
            if m.kind == "count":
                aggs.append(F.count(F.lit(1)).cast("decimal(38,0)").alias(f"_m{i}"))
            else:
                aggs.append(F.sum(F.col(m.column).cast(DecimalType(38, m.decimals))).alias(f"_m{i}"))
        grouped = df.groupBy(F.col(group_column).cast("string").alias("_key")).agg(*aggs)
        keys = spark.createDataFrame(list(enumerate(layout.keys)), "_index long, _key string")
        indexed = grouped.join(F.broadcast(keys), "_key", "left")
        integer = isinstance(self.plan.params, BFVParams)
        entries = []
        for i, m in enumerate(layout.measures):
            decimal = DecimalType(38, m.decimals)
            value = F.coalesce(F.col(f"_m{i}").cast(decimal), F.lit(0).cast(decimal))
            value = (value * F.lit(10**m.decimals)).cast("long") if integer else value.cast("double")
            entries.append(
                F.struct(
                    (F.col("_index") + F.lit(i * len(layout.keys))).alias("pos"),
                    value.alias("value"),
                    (F.col("_rows") if i == 0 else F.lit(0).cast("long")).alias("rows"),
                    F.lit(1).cast("long").alias("values"),
                )
            )
        exploded = indexed.select(F.explode(F.array(*entries)).alias("e")).select("e.*")
        value_type = "long" if integer else "double"
        padding = spark.createDataFrame(
            [(c * layout.slots, 0 if integer else 0.0, 0, 0) for c in range(layout.chunks)],
            f"pos long, value {value_type}, rows long, values long",
        )
        packed_input = exploded.unionByName(padding)
        if layout.chunks <= _SINGLE_TASK_CHUNKS:
            # small layouts: one task packs every chunk, no second shuffle
            packed_input = packed_input.coalesce(1)
        else:
            chunk = (F.col("pos") / F.lit(layout.slots)).cast("long")
            packed_input = packed_input.repartition(_reduce_partitions(spark, layout), chunk)
        return packed_input.mapInArrow(self._packer(layout, quantize=False), PACK_SCHEMA)

    def pack_vector(self, df: DataFrame, *, position_column: str, value_column: str, layout: VectorLayout) -> DataFrame:
        """A value vector (one row per value, ``position`` in ``[0, length)``) packed in executors, no shuffle.

        Values are quantized to the measure's grid; values at the same position add up. A partition
        emits one (partial) ciphertext per chunk it touches, so sort or range-partition by position to
        keep ``ciphertexts_per_party`` small; :meth:`write` enforces the plan's limit.
        """
        from pyspark.sql import functions as F

        _plan_matches(self.plan, layout)
        for column in (position_column, value_column):
            if column not in df.columns:
                raise SpecError(f"party '{self.party_id}': no column '{column}'")
        source = df.select(
            F.col(position_column).cast("long").alias("pos"),
            F.col(value_column).cast("double").alias("value"),
            F.lit(1).cast("long").alias("rows"),
            F.lit(1).cast("long").alias("values"),
        )
        return source.mapInArrow(self._packer(layout, quantize=True), PACK_SCHEMA)

    # -- committing ----------------------------------------------------------------------------
    def write(
        self,
        packed: DataFrame,
        output: str,
        *,
        layout: Layout,
        round_id: str,
        overwrite: bool = False,
    ) -> CiphertextDataset:
        """Write packed ciphertexts, check them, authenticate the manifest, commit atomically.

        Raises:
            GuardFailed: the party's input is empty, or has keys / positions outside the layout.
            OverflowRisk: a slot exceeds its measure's declared bound, or a chunk has more ciphertexts
                than the plan's ``ciphertexts_per_party``.
        """

        _check_id(round_id, "round id")
        if io.output_exists(output) and not overwrite:
            raise SpecError(f"party '{self.party_id}': output {output} exists")
        staging = io.new_staging_path(output, round_id)
        try:
            with _library_errors(f"party '{self.party_id}': encrypting"):
                _write_staged(packed, staging, layout)
                # one small job: a row per ciphertext (never per input row)
                meta = (
                    packed.sparkSession.read.parquet(staging)
                    .select("chunk", "digest", "n_rows", "n_values", "out_of_bounds", "unknown")
                    .collect()
                )
            totals = {
                name: sum(int(r[col]) for r in meta)
                for name, col in (
                    ("rows", "n_rows"),
                    ("values", "n_values"),
                    ("out_of_bounds", "out_of_bounds"),
                    ("unknown", "unknown"),
                )
            }
            if totals["unknown"]:
                raise GuardFailed(
                    f"party '{self.party_id}': {totals['unknown']} values have group keys or positions outside "
                    f"the declared layout {layout.layout_id}; nothing was written"
                )
            if not totals["rows"]:
                raise GuardFailed(f"party '{self.party_id}': the input is empty; an empty contribution is refused")
            if totals["out_of_bounds"]:
                raise OverflowRisk(
                    f"party '{self.party_id}': {totals['out_of_bounds']} slot values exceed their measure's declared "
                    "bound; the sum's overflow and precision guarantees would not hold; nothing was written"
                )
            digests = sorted((int(r["chunk"]), str(r["digest"])) for r in meta if r["chunk"] >= 0)
            per_chunk: dict[int, int] = {}
            for chunk, _ in digests:
                per_chunk[chunk] = per_chunk.get(chunk, 0) + 1
            worst = max(per_chunk.values(), default=0)
            if worst > self.plan.ciphertexts_per_party:
                raise OverflowRisk(
                    f"party '{self.party_id}': a chunk has {worst} partial ciphertexts, the plan allows "
                    f"{self.plan.ciphertexts_per_party}; sort or range-partition the input by position"
                )
            manifest = Manifest.sign(
                {
                    "format": CONTRIBUTION_FORMAT,
                    "party_id": self.party_id,
                    "round_id": round_id,
                    "scheme": self.plan.params.scheme,
                    "params": self.plan.params.to_dict(),
                    "context_fingerprint": self.context.fingerprint,
                    "layout_id": layout.layout_id,
                    "rows": int(totals["rows"]),
                    "values": int(totals["values"]),
                    "ciphertexts": len(digests),
                    "ciphertext_digests": [[c, d] for c, d in digests],
                    "nonce": secrets.token_hex(16),
                },
                self._key,
            )
            manifest.write(io.local_path(staging))
            io.commit(staging, output, overwrite=overwrite)
        except BaseException:
            io.discard(staging)
            raise
        return CiphertextDataset(path=output, manifest=manifest)


def _check_common(
    manifest: Manifest, *, fmt: str, round_id: str, fingerprint: str, layout: Layout, plan: SumPlan
) -> None:
    who = f"{manifest.role} '{manifest.owner}'"
    if manifest.format != fmt:
        raise IntegrityError(f"{who}: expected a {fmt} manifest")
    if manifest.body.get("round_id") != round_id:
        raise IntegrityError(f"{who}: contribution belongs to another aggregation round (replayed or misrouted)")
    if manifest.body.get("context_fingerprint") != fingerprint:
        raise IntegrityError(f"{who}: ciphertexts were made under another public context (fingerprint mismatch)")
    if manifest.body.get("layout_id") != layout.layout_id:
        raise IntegrityError(f"{who}: ciphertexts use another slot layout")
    if manifest.body.get("params") != plan.params.to_dict():
        raise IntegrityError(f"{who}: ciphertexts declare other scheme parameters")


def _verify_contributions(
    manifests: Sequence[Manifest],
    *,
    round_id: str,
    fingerprint: str,
    layout: Layout,
    plan: SumPlan,
    party_keys: KeyProvider | Mapping[str, Key] | None,
    party_key_ids: Mapping[str, str] | None,
    expected_parties: Sequence[str] | None,
    replay_guard: ReplayGuard | None,
) -> None:
    seen_parties: set[str] = set()
    seen_nonces: set[str] = set()
    for manifest in manifests:
        party = manifest.owner
        _check_common(
            manifest, fmt=CONTRIBUTION_FORMAT, round_id=round_id, fingerprint=fingerprint, layout=layout, plan=plan
        )
        if party_keys is not None:
            key_id = (party_key_ids or {}).get(party)
            if key_id is None:
                raise IntegrityError(f"party '{party}': no verification key is configured for this party")
            manifest.verify(resolve_key(party_keys, key_id, manifest.body.get("key_version"), who=f"party '{party}'"))
        if party in seen_parties:
            raise IntegrityError(f"party '{party}': contributed twice to round '{round_id}' (replay)")
        nonce = str(manifest.body.get("nonce"))
        if nonce in seen_nonces:
            raise IntegrityError(f"party '{party}': contribution nonce seen twice (replay)")
        if replay_guard is not None:
            replay_guard.check(manifest)
        seen_parties.add(party)
        seen_nonces.add(nonce)
        if not manifest.body.get("rows") or not manifest.body.get("ciphertexts"):
            raise IntegrityError(f"party '{party}': empty contribution (no rows or no ciphertexts)")
        per_chunk: dict[int, int] = {}
        for chunk, _ in manifest.body.get("ciphertext_digests", []):
            per_chunk[chunk] = per_chunk.get(chunk, 0) + 1
        if len(manifest.body.get("ciphertext_digests", [])) != manifest.body.get("ciphertexts"):
            raise IntegrityError(f"party '{party}': manifest ciphertext count disagrees with its digest list")
        if max(per_chunk.values(), default=0) > plan.ciphertexts_per_party:
            raise OverflowRisk(
                f"party '{party}': more ciphertexts per chunk than the plan's {plan.ciphertexts_per_party}"
            )
    if expected_parties is not None and set(expected_parties) != seen_parties:
        missing = sorted(set(expected_parties) - seen_parties)
        extra = sorted(seen_parties - set(expected_parties))
        raise IntegrityError(
            f"contributing parties differ from the expected set: missing {missing}, unexpected {extra}"
        )
    if len(seen_parties) > plan.parties:
        raise OverflowRisk(f"{len(seen_parties)} parties contributed; the plan covers at most {plan.parties}")


class Aggregator:
    """Adds ciphertext datasets from many parties without any secret key.

    Args:
        aggregator_id: Public id of the aggregator.
        public_context: The key holder's public context; a context holding a secret key is refused.
        plan: The checked plan.
        key: The aggregator's manifest key.
    """

    def __init__(self, aggregator_id: str, public_context: PublicContext | bytes, *, plan: SumPlan, key: Key) -> None:
        self.aggregator_id = _check_id(aggregator_id, "aggregator id")
        self.plan = plan
        self.context = PublicContext.accept(public_context, plan.params, role="aggregator")
        self._key = key

    def __repr__(self) -> str:
        return f"Aggregator({self.aggregator_id!r}, context={self.context.fingerprint[:16]})"

    def aggregate(
        self,
        spark: SparkSession,
        contributions: Sequence[str | Path | CiphertextDataset],
        output: str,
        *,
        layout: Layout,
        round_id: str,
        party_keys: KeyProvider | Mapping[str, Key] | None,
        party_key_ids: Mapping[str, str] | None = None,
        expected_parties: Sequence[str] | None = None,
        replay_guard: ReplayGuard | None = None,
        overwrite: bool = False,
    ) -> CiphertextDataset:
        """Verify every contribution, add the ciphertexts slot by slot in executors, commit the aggregate.

        ``party_keys`` (with ``party_key_ids``: party id -> key id, decided by the verifier) checks each
        party's manifest MAC; ``None`` skips that check here, for deployments that do not trust the
        aggregator with party keys, and leaves it to the key holder (:func:`decrypt_sums` with ``party_keys``).

        Raises:
            IntegrityError: a forged, tampered, truncated, replayed, empty or mismatched-context
                contribution, naming the party.
            OverflowRisk: more contributions than the plan covers.
        """
        from pyspark.sql import functions as F

        _check_id(round_id, "round id")
        _plan_matches(self.plan, layout)
        if not contributions:
            raise SpecError("the aggregator needs at least one contribution")
        datasets = [
            c if isinstance(c, CiphertextDataset) else CiphertextDataset.open(c, who=f"contribution {Path(c).name}")
            for c in contributions
        ]
        manifests = [d.manifest for d in datasets]
        _verify_contributions(
            manifests,
            round_id=round_id,
            fingerprint=self.context.fingerprint,
            layout=layout,
            plan=self.plan,
            party_keys=party_keys,
            party_key_ids=party_key_ids,
            expected_parties=expected_parties,
            replay_guard=replay_guard,
        )
        union = None
        for dataset in datasets:
            part = dataset.read(spark).withColumn("party", F.lit(dataset.manifest.owner))
            union = part if union is None else union.unionByName(part)
        assert union is not None
        expected = [
            (m.owner, int(chunk), str(digest)) for m in manifests for chunk, digest in m.body["ciphertext_digests"]
        ]
        try:
            _verify_digests(spark, union, expected, layout.layout_id)
        except IntegrityError:
            raise
        except Exception as exc:  # a damaged file fails the Spark job: find whose it is
            _raise_unreadable(spark, datasets, exc)

        params = self.plan.params
        adder = make_adder(
            context_bytes=self.context.data,
            fingerprint=self.context.fingerprint,
            scheme=params.scheme,
            slots=params.slots,
            scale=params.scale if isinstance(params, CKKSParams) else None,
        )
        leaves = union.select(
            "chunk",
            "ciphertext",
            F.lit(None).cast("string").alias("digest"),
            F.lit(1).cast("long").alias("n_inputs"),
            "party",
            F.lit(None).cast("string").alias("reason"),
        )
        partial = leaves.mapInArrow(adder, ADD_SCHEMA)
        final = partial.repartition(_reduce_partitions(spark, layout), "chunk").mapInArrow(adder, ADD_SCHEMA)
        staging = io.new_staging_path(output, round_id)
        try:
            with _library_errors(f"aggregator '{self.aggregator_id}': adding"):
                _write_staged(final, staging, layout)
                # one small job: a row per chunk sum or flagged input
                meta = spark.read.parquet(staging).select("chunk", "digest", "n_inputs", "party", "reason").collect()
            bad = sorted({(str(r["party"]), str(r["reason"])) for r in meta if r["reason"] is not None})
            if bad:
                detail = "; ".join(f"party '{p}': {reason}" for p, reason in bad)
                raise IntegrityError(f"invalid ciphertexts: {detail}")
            chunks = sorted((int(r["chunk"]), str(r["digest"]), int(r["n_inputs"])) for r in meta)
            if len({c for c, _, _ in chunks}) != len(chunks):  # pragma: no cover - the tree guarantees it
                raise IntegrityError("aggregate holds two sums for one chunk")
            manifest = Manifest.sign(
                {
                    "format": AGGREGATE_FORMAT,
                    "aggregator_id": self.aggregator_id,
                    "round_id": round_id,
                    "scheme": params.scheme,
                    "params": params.to_dict(),
                    "context_fingerprint": self.context.fingerprint,
                    "layout_id": layout.layout_id,
                    "contributions": [m.to_dict() for m in manifests],
                    "rows": sum(int(m.body["rows"]) for m in manifests),
                    "values": sum(int(m.body["values"]) for m in manifests),
                    "ciphertexts": len(chunks),
                    "ciphertext_digests": [[c, d] for c, d, _ in chunks],
                    "inputs_per_chunk": [[c, n] for c, _, n in chunks],
                    "nonce": secrets.token_hex(16),
                },
                self._key,
            )
            manifest.write(io.local_path(staging))
            io.commit(staging, output, overwrite=overwrite)
        except BaseException:
            io.discard(staging)
            raise
        if replay_guard is not None:
            replay_guard.consume(manifests)
        return CiphertextDataset(path=output, manifest=manifest)


@dataclass(frozen=True)
class DecryptedSums:
    """Checked decryptions: per measure, the sums as exact scaled integers (value = scaled / 10^decimals).

    Attributes:
        layout: The slot layout.
        plan: The plan the sums were checked against.
        scaled: Measure name -> int64 array over the layout's keys (groups) or positions (vector).
        max_grid_deviation: CKKS: per measure, the largest distance of a decryption from the grid (0 for BFV).
        parties: Contributing party ids.
        rows: Total rows over all parties.
    """

    layout: Layout
    plan: SumPlan
    scaled: dict[str, np.ndarray]
    max_grid_deviation: dict[str, float]
    parties: tuple[str, ...]
    rows: int


def decrypt_sums(
    holder: KeyHolder,
    spark: SparkSession,
    aggregate: str | Path | CiphertextDataset,
    *,
    layout: Layout,
    plan: SumPlan,
    round_id: str,
    aggregator_keys: KeyProvider | Mapping[str, Key],
    aggregator_key_id: str,
    expected_parties: Sequence[str],
    party_keys: KeyProvider | Mapping[str, Key] | None = None,
    party_key_ids: Mapping[str, str] | None = None,
    replay_guard: ReplayGuard | None = None,
) -> DecryptedSums:
    """The key holder's side: verify the aggregate, decrypt it, check it against the plan.

    Checks, in order: the aggregate manifest's MAC (aggregator key), round, context fingerprint and
    layout; the embedded party manifests (MACs too, when ``party_keys`` is given) and the party set;
    the stored ciphertexts' digests; then, after decryption, that every slot lies within
    ``parties * bound`` (+ the CKKS error bound), that padding slots decrypt to zero, and (CKKS) that
    each value lies within the error bound of the grid. A decryption failing these checks was not
    produced by honest contributions under this key: ``IntegrityError``.
    """

    _plan_matches(plan, layout)
    if plan.params != holder.params:
        raise HEParameterError("the plan's parameters are not the key holder's")
    dataset = (
        aggregate if isinstance(aggregate, CiphertextDataset) else CiphertextDataset.open(aggregate, who="aggregate")
    )
    manifest = dataset.manifest
    _check_common(
        manifest, fmt=AGGREGATE_FORMAT, round_id=round_id, fingerprint=holder.fingerprint, layout=layout, plan=plan
    )
    manifest.verify(resolve_key(aggregator_keys, aggregator_key_id, manifest.body.get("key_version"), who="aggregator"))
    if replay_guard is not None:
        replay_guard.check(manifest)
    contributions = [
        Manifest.from_dict(c, where=f"aggregate '{manifest.owner}' contribution")
        for c in manifest.body.get("contributions", [])
    ]
    _verify_contributions(
        contributions,
        round_id=round_id,
        fingerprint=holder.fingerprint,
        layout=layout,
        plan=plan,
        party_keys=party_keys,
        party_key_ids=party_key_ids,
        expected_parties=expected_parties,
        replay_guard=None,
    )
    params = plan.params
    integer = isinstance(params, BFVParams)
    total = np.zeros(layout.chunks * params.slots, dtype=np.int64 if integer else np.float64)
    listed = {int(c): str(d) for c, d in manifest.body["ciphertext_digests"]}
    if len(listed) != len(manifest.body["ciphertext_digests"]):
        raise IntegrityError(f"aggregate '{manifest.owner}': the manifest lists a chunk twice")
    seen: set[int] = set()
    # the aggregate holds one ciphertext per chunk (sums, not row-level data): stream them to the key holder
    for row in _stream(dataset.read(spark), "key holder: reading the aggregate"):
        chunk, ciphertext = int(row["chunk"]), bytes(row["ciphertext"])
        digest_ok = listed.get(chunk) == hashlib.sha256(ciphertext).hexdigest()
        if not digest_ok or row["layout_id"] != layout.layout_id or chunk in seen:
            raise IntegrityError(
                f"aggregate '{manifest.owner}': a stored ciphertext is not the one its manifest lists (forged, "
                "tampered or duplicated)"
            )
        if not 0 <= chunk < layout.chunks:
            raise IntegrityError(f"aggregate '{manifest.owner}': chunk {chunk} is outside the layout")
        seen.add(chunk)
        slots = holder.decrypt_chunk(ciphertext)
        if slots.shape != (params.slots,):
            raise IntegrityError(f"aggregate '{manifest.owner}': chunk {chunk} decrypts to {slots.size} slots")
        total[chunk * params.slots : (chunk + 1) * params.slots] = slots
    if seen != set(listed):
        raise IntegrityError(f"aggregate '{manifest.owner}': {len(set(listed) - seen)} listed ciphertexts are missing")

    block = _block(layout)
    values, padding = total[: layout.size], total[layout.size :]
    scaled: dict[str, np.ndarray] = {}
    deviation: dict[str, float] = {}
    worst_error = max(plan.error_bound.values(), default=0.0)
    if padding.size and np.any(np.abs(padding) > worst_error):
        raise IntegrityError(
            f"aggregate '{manifest.owner}': padding slots decrypt to non-zero values "
            "(a contribution was made under another key, or forged)"
        )
    for i, m in enumerate(layout.measures):
        part = values[i * block : (i + 1) * block]
        limit = plan.max_abs_total(m.name)
        pow10 = 10**m.decimals
        if integer:
            if np.any(np.abs(part) > int(limit * pow10)):
                raise IntegrityError(
                    f"aggregate '{manifest.owner}': measure '{m.name}' decrypts outside parties * bound "
                    "(wrong key, forged ciphertext or wrap-around)"
                )
            scaled[m.name], deviation[m.name] = part.astype(np.int64), 0.0
            continue
        err = plan.error_bound[m.name]
        if np.any(np.abs(part) > float(limit) + err):
            raise IntegrityError(
                f"aggregate '{manifest.owner}': measure '{m.name}' decrypts outside parties * bound "
                "(wrong key or forged ciphertext)"
            )
        grid = np.rint(part * pow10)
        dev = float(np.max(np.abs(part - grid / pow10), initial=0.0))
        if dev > err:
            raise IntegrityError(
                f"aggregate '{manifest.owner}': measure '{m.name}' lies {dev:.3g} off the declared grid, beyond the "
                f"error bound {err:.3g} (wrong key, forged ciphertext, or inputs not quantized)"
            )
        scaled[m.name], deviation[m.name] = grid.astype(np.int64), dev
    if replay_guard is not None:
        replay_guard.consume([manifest])
    return DecryptedSums(
        layout=layout,
        plan=plan,
        scaled=scaled,
        max_grid_deviation=deviation,
        parties=tuple(sorted(c.owner for c in contributions)),
        rows=int(manifest.body.get("rows", 0)),
    )
