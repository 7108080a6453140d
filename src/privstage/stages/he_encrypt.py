"""``he_encrypt``: a party sums its rows per declared group in Spark and encrypts the sums.

Plan (no data read): the key holder's published round is read from ``context`` and checked (128-bit
security, overflow and precision for the declared parties); the public context is accepted for the
party role only (a context holding a secret key raises ``HEParameterError``), optionally pinned to
``expect_fingerprint``; the party must be one of the round's parties; the group and measure columns
must exist (measures numeric); the party's manifest key is fetched.

Produce: per-group sums (exact decimals, counts) in Spark, packed into ciphertexts in executors under
the public key (:meth:`privstage.he.Party.pack_groups`), checked against the declared bounds and key
set, and authenticated by the party's manifest (``_he_manifest.json`` beside the ciphertexts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privstage.errors import IntegrityError, PrivstageError, SpecError
from privstage.guards.builtin import NonEmptyGuard
from privstage.stages._he import (
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

    from privstage.he.context import PublicContext
    from privstage.keys import Key, KeyProvider
    from privstage.spec import HEEncryptStage

__all__ = ["HEEncryptPlan", "builtin_guards", "narrow", "output_schema", "plan", "produce"]


@dataclass
class HEEncryptPlan:
    """The party's checked round and keys. Holds the manifest key: never serialize it."""

    stage: HEEncryptStage
    round: Round
    public: PublicContext
    key: Key
    output_path: Callable[[], str]

    @property
    def key_versions(self) -> dict[str, int]:
        return {self.key.key_id: self.key.version}

    def describe(self) -> dict[str, Any]:
        return {"he": {"role": "party", "party_id": self.stage.party_id, **describe_round(self.round)}}


def plan(stage: HEEncryptStage, schema: StructType, keys: KeyProvider, *, env: Any = None) -> HEEncryptPlan:
    """Check the round, the public context, the party and the columns; fetch the manifest key.

    Raises:
        HEParameterError: the context holds a secret key, or the round's parameters are insecure or unusable.
        OverflowRisk: the round's bounds overflow for its parties.
        IntegrityError: the context does not match ``expect_fingerprint`` or the round.
        SpecError: unknown party, missing or non-numeric columns.
        KeyUnavailable: the manifest key cannot be fetched.
    """
    from pyspark.sql import types as T

    spec = env.spec
    try:
        round_ = load_round(spec, stage.context, stage=stage.name)
        public = round_.accept_public("party")
        if stage.expect_fingerprint is not None and stage.expect_fingerprint != public.fingerprint:
            raise IntegrityError(
                f"party '{stage.party_id}': the public context is not the pinned one (expect_fingerprint)"
            )
        if stage.party_id not in round_.parties:
            raise SpecError(f"party '{stage.party_id}' is not one of the round's parties {list(round_.parties)}")
        names = schema.fieldNames()
        if stage.group_column not in names:
            raise SpecError(f"no group column '{stage.group_column}' in the input (columns: {names})")
        for m in round_.layout.measures:
            if m.kind != "sum":
                continue
            if m.column not in names:
                raise SpecError(f"measure '{m.name}' sums column '{m.column}', which the input lacks")
            if not isinstance(schema[m.column].dataType, T.NumericType):
                raise SpecError(f"measure '{m.name}': column '{m.column}' must be numeric")
        key = keys.get(stage.key_id)
    except PrivstageError as exc:
        raise with_stage(exc, stage.name) from None
    out = spec.resolve_path(stage.output.path)
    return HEEncryptPlan(stage=stage, round=round_, public=public, key=key, output_path=lambda: out)


def output_schema(p: HEEncryptPlan, input_schema: StructType | None = None) -> StructType:
    return stored_schema()


def narrow(df: DataFrame, p: HEEncryptPlan) -> DataFrame:
    """Only the group column and the summed columns leave the input."""
    columns = [p.stage.group_column] + [m.column for m in p.round.layout.measures if m.column]
    return df.select(*dict.fromkeys(columns))


def builtin_guards(p: HEEncryptPlan) -> tuple[list[Any], list[Any]]:
    """Before: the party has rows (an empty contribution is refused). After: nothing more (the library checks)."""
    layout = p.round.layout
    return [NonEmptyGuard()], [HEOutputGuard(layout_id=layout.layout_id, chunks=layout.chunks)]


def produce(df: DataFrame, p: HEEncryptPlan, *, spark: SparkSession, run: Any) -> Any:
    """Encrypt the party's per-group sums; the engine stages the stored ciphertexts and the manifest."""
    from privstage.he.manifest import MANIFEST_FILE
    from privstage.he.roles import Party
    from privstage.stages.dp_aggregate import Production

    party = Party(p.stage.party_id, p.public, plan=p.round.plan, key=p.key)
    private = private_dir(p.output_path())
    try:
        packed = party.pack_groups(df, group_column=p.stage.group_column, layout=p.round.layout)
        written = party.write(packed, private, layout=p.round.layout, round_id=p.round.round_id)
        manifest = (written.manifest.to_dict()["body"], written.manifest.mac)
        files = {MANIFEST_FILE: (private_path_file(private, MANIFEST_FILE))}
    except BaseException:
        remove_private(private)
        raise

    def before_commit() -> list[Any]:
        remove_private(private)  # the engine's staging holds the same ciphertext bytes now
        return []

    details = {
        **p.describe(),
        "he_contribution": {
            "rows": manifest[0]["rows"],
            "ciphertexts": manifest[0]["ciphertexts"],
            "nonce_prefix": str(manifest[0]["nonce"])[:8],
        },
    }
    return Production(
        frame=staged_frame(spark, private),
        files=files,
        details=details,
        before_commit=before_commit,
        on_failure=lambda: remove_private(private),
    )


def private_path_file(private: str, name: str) -> bytes:
    from privstage.io import local_path

    return (local_path(private) / name).read_bytes()
