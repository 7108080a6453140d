"""``he_decrypt``: the key holder verifies the aggregate, decrypts it and releases rounded sums.

Plan (before the aggregate is read): the round is read from the key holder's own ``context`` (its
he_keygen output); the sealed secret context for that round's fingerprint is opened with
``secret_key_id`` (``KeyUnavailable`` on a wrong key); the aggregator and party verification keys are
fetched; with ``dp``, the noise's budget is checked against the ledger (``BudgetExceeded``).

Produce: :func:`privstage.he.decrypt_sums` checks the aggregate's MAC, round, context fingerprint,
layout, the embedded party manifests and the party set, the stored ciphertexts' digests, and after
decryption the ranges, zero padding and (CKKS) the distance to the declared grid; anything else is an
``IntegrityError`` naming the aggregator or party. :func:`privstage.he.release` then publishes only
values on each measure's grid (never a raw CKKS decryption), optionally with DP noise drawn after the
ledger reservation; ratios (the average cost per visit) are computed from released values only.

With ``dp`` the release is one ledger spend, keyed (pipeline, stage, dataset, period, partition): a
retry gets the committed release bytes back and spends nothing. The aggregate manifest's nonce is
consumed (durably, in the ledger's database) just before the output commits: replaying an aggregate
into another run is an ``IntegrityError``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from privstage.errors import KeyUnavailable, PrivstageError, SpecError
from privstage.guards.builtin import NonEmptyGuard
from privstage.stages._he import HEOutputGuard, Round, describe_round, load_round, secret_path, with_stage

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from privstage.budget import LedgerKey, PrivacyBudget
    from privstage.he.context import KeyHolder
    from privstage.keys import KeyProvider
    from privstage.spec import HEDecryptStage

__all__ = ["RELEASE_FORMAT", "RELEASE_NAME", "HEDecryptPlan", "builtin_guards", "output_schema", "plan", "produce"]

RELEASE_FORMAT = "privstage-he-release/1"
#: The release's canonical bytes beside the output (what the ledger stores when the release is noised).
RELEASE_NAME = "_he_release.json"


@dataclass
class HEDecryptPlan:
    """The key holder's checked round, secret context and keys. Holds the secret key: never serialize it."""

    stage: HEDecryptStage
    round: Round
    holder: KeyHolder
    keys: KeyProvider
    input_path: str
    pipeline: str
    output: StructType
    ledger: Any
    ledger_key: LedgerKey | None = None
    budget: PrivacyBudget | None = None
    total: PrivacyBudget | None = None
    release_sha256: str | None = None

    @property
    def key_versions(self) -> dict[str, int]:
        return {}

    @property
    def reuse_key(self) -> str | None:
        """A noised release committed in the ledger is this release (as for dp_aggregate)."""
        if self.ledger_key is None or self.release_sha256 is None:
            return None
        return f"{self.ledger_key}@{self.release_sha256}"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": "key holder", **describe_round(self.round)}
        if self.ledger_key is not None:
            out["dp"] = {
                "ledger_key": str(self.ledger_key),
                "budget": self.budget.to_dict() if self.budget else None,
                "declared_total": self.total.to_dict() if self.total else None,
            }
        return {"he": out}


def plan(stage: HEDecryptStage, schema: StructType, keys: KeyProvider, *, env: Any = None) -> HEDecryptPlan:
    """Open the sealed secret context, fetch the verification keys, check the DP budget. No data read.

    Raises:
        KeyUnavailable: the sealed secret context is missing or ``secret_key_id`` does not open it.
        SpecError: the input is not a ciphertext dataset; noise or ratios name unknown measures.
        BudgetExceeded: the noised release does not fit the ledger.
    """
    from pyspark.sql import types as T

    from privstage.he.context import KeyHolder

    spec = env.spec
    try:
        round_ = load_round(spec, stage.context, stage=stage.name)
        sealed_at = secret_path(spec, stage.secret_dir, round_.fingerprint)
        try:
            sealed = sealed_at.read_bytes()
        except OSError:
            raise KeyUnavailable(
                f"no sealed secret context for round '{round_.round_id}' (fingerprint {round_.fingerprint[:16]}) "
                "in the key holder's secret_dir",
                key_id=stage.secret_key_id,
            ) from None
        holder = KeyHolder.unseal(sealed, keys.get(stage.secret_key_id), round_.params)
        if holder.fingerprint != round_.fingerprint:
            raise KeyUnavailable("the sealed secret context belongs to another round", key_id=stage.secret_key_id)
        keys.get(stage.aggregator_key_id)
        for key_id in (stage.party_keys or {}).values():
            keys.get(key_id)
        missing = [c for c in ("chunk", "ciphertext", "layout_id") if c not in schema.fieldNames()]
        if missing:
            raise SpecError(f"the input is not a ciphertext dataset (missing {missing})")
        measures = {m.name: m for m in round_.layout.measures}
        for r in stage.ratios:
            unknown = [n for n in (r.numerator, r.denominator) if n not in measures]
            if unknown:
                raise SpecError(f"ratio '{r.name}' names unknown measures {unknown} (known: {sorted(measures)})")
        names = [stage.group_column, *measures, *(r.name for r in stage.ratios)]
        if len(set(names)) != len(names):
            raise SpecError(f"output columns clash: {names}")
    except PrivstageError as exc:
        raise with_stage(exc, stage.name) from None

    fields = [T.StructField(stage.group_column, T.StringType(), False)]
    fields += [T.StructField(m.name, T.DecimalType(38, m.decimals), False) for m in round_.layout.measures]
    fields += [T.StructField(r.name, T.DecimalType(38, r.decimals), True) for r in stage.ratios]
    detail = HEDecryptPlan(
        stage=stage,
        round=round_,
        holder=holder,
        keys=keys,
        input_path=spec.input_path(stage),
        pipeline=spec.name,
        output=T.StructType(fields),
        ledger=env.ledger,
    )
    if stage.dp is not None:
        _plan_dp(stage, detail, env, measures)
    return detail


def _plan_dp(stage: HEDecryptStage, detail: HEDecryptPlan, env: Any, measures: dict[str, Any]) -> None:
    from privstage.budget import LedgerKey
    from privstage.stages.dp_aggregate import render_period

    dp = stage.dp
    assert dp is not None
    for name, noise in dp.noise.items():
        if name not in measures:
            raise SpecError(f"dp.noise names unknown measure '{name}' (known: {sorted(measures)})", stage=stage.name)
        grid = noise.sensitivity * (Decimal(10) ** measures[name].decimals)
        if grid != grid.to_integral_value():
            raise SpecError(
                f"dp.noise.{name}.sensitivity {noise.sensitivity} is finer than the measure's grid "
                f"(10^-{measures[name].decimals})",
                stage=stage.name,
            )
    try:
        period = render_period(dp.budget.period, env.partition)
    except SpecError as exc:
        raise SpecError(exc.message, stage=stage.name) from None
    key = LedgerKey(env.pipeline, stage.name, dp.budget.dataset, period, env.partition)
    detail.ledger_key, detail.budget, detail.total = key, dp.total_budget(), dp.budget.total.budget
    detail.release_sha256 = env.check_budget(key, detail.budget, detail.total, stage=stage.name)


def output_schema(p: HEDecryptPlan, input_schema: StructType | None = None) -> StructType:
    """One row per declared group: the group key, each measure on its grid, then the ratios."""
    return p.output


def builtin_guards(p: HEDecryptPlan) -> tuple[list[Any], list[Any]]:
    """Before: the aggregate has rows. After: one released row per declared group."""
    return [NonEmptyGuard()], [HEOutputGuard(expected_rows=len(p.round.layout.keys))]


def _mechanisms(p: HEDecryptPlan) -> dict[str, Any]:
    from privstage.dp.mechanisms import DiscreteGaussianNoise, GeometricNoise

    out: dict[str, Any] = {}
    assert p.stage.dp is not None
    for name, noise in p.stage.dp.noise.items():
        decimals = p.round.layout.measure_named(name).decimals
        sensitivity = int(noise.sensitivity * (Decimal(10) ** decimals))  # grid units (checked integral at plan)
        if noise.mechanism == "geometric":
            out[name] = GeometricNoise(epsilon=noise.epsilon.fraction, sensitivity=sensitivity)
        else:
            out[name] = DiscreteGaussianNoise(
                epsilon=noise.epsilon.fraction, delta=noise.delta.fraction, sensitivity=sensitivity
            )
    return out


def _release_bytes(p: HEDecryptPlan, run: Any, spark: SparkSession) -> bytes:
    from privstage.he.release import release
    from privstage.he.roles import decrypt_sums

    stage = p.stage
    sums = decrypt_sums(
        p.holder,
        spark,
        p.input_path,
        layout=p.round.layout,
        plan=p.round.plan,
        round_id=p.round.round_id,
        aggregator_keys=p.keys,
        aggregator_key_id=stage.aggregator_key_id,
        expected_parties=list(p.round.parties),
        party_keys=p.keys if stage.party_keys is not None else None,
        party_key_ids=stage.party_keys,
    )
    published = release(sums, noise=_mechanisms(p) if stage.dp is not None else None)
    ratios = {r.name: published.ratio(r.numerator, r.denominator, decimals=r.decimals) for r in stage.ratios}
    rows = []
    for key in p.round.layout.keys:
        row: list[Any] = [key]
        row += [str(published.value(m.name, key)) for m in p.round.layout.measures]
        row += [None if ratios[r.name][key] is None else str(ratios[r.name][key]) for r in stage.ratios]
        rows.append(row)
    doc = {
        "format": RELEASE_FORMAT,
        "round_id": p.round.round_id,
        "context_fingerprint": p.round.fingerprint,
        "scheme": published.scheme,
        "columns": p.output.fieldNames(),
        "rows": rows,
        "parties": list(published.parties),
        "error_bound": {k: repr(v) for k, v in published.error_bound.items()},
        "noise": published.noise,
        "ledger_key": None if p.ledger_key is None else str(p.ledger_key),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode("ascii")


def decode_release(data: bytes, schema: StructType) -> list[tuple[Any, ...]]:
    """Output rows of release bytes (decimal strings back to ``Decimal``)."""
    from privstage.errors import IntegrityError

    try:
        doc = json.loads(data.decode("ascii"))
        if doc.get("format") != RELEASE_FORMAT or doc.get("columns") != schema.fieldNames():
            raise ValueError
        return [(row[0], *(None if v is None else Decimal(v) for v in row[1:])) for row in doc["rows"]]
    except (ValueError, UnicodeDecodeError, AttributeError, KeyError, TypeError):
        raise IntegrityError("the committed HE release does not match this stage's output schema") from None


def produce(df: DataFrame, p: HEDecryptPlan, *, spark: SparkSession, run: Any) -> Any:
    """Decrypt, check and release (or return the release the ledger committed); consume the aggregate's nonce."""
    from privstage.guards.base import GuardOutcome
    from privstage.he.manifest import Manifest
    from privstage.he.nonces import NonceStore
    from privstage.io import local_path
    from privstage.stages.dp_aggregate import Production

    aggregate = Manifest.read(local_path(p.input_path), who="aggregate")
    nonces = NonceStore(p.ledger(), verifier=f"key-holder:{p.pipeline}/{p.stage.name}", consumer=run.run_key)
    held = None
    ledger = None
    details: dict[str, Any] = p.describe()
    if p.ledger_key is not None:
        assert p.budget is not None and p.total is not None
        ledger = p.ledger()
        ledger.declare(p.ledger_key.dataset, p.ledger_key.period, p.total)
        held = ledger.reserve(p.ledger_key, p.budget)
    if held is not None and held.committed:
        # The ledger holds this release already: publish its bytes again, decrypt nothing (no replay to check).
        assert held.release is not None
        data = held.release
        details["he"]["dp"]["reused_release"] = True
    else:
        try:
            nonces.check(aggregate)  # decrypting an aggregate again in another run is a replay
            data = _release_bytes(p, run, spark)
        except BaseException:
            if held is not None and ledger is not None:
                ledger.release(held)
            raise
    sha = hashlib.sha256(data).hexdigest()
    p.release_sha256 = sha if p.ledger_key is not None else None
    details["he"]["release_sha256"] = sha
    frame = spark.createDataFrame(decode_release(data, p.output), p.output).coalesce(1)

    def before_commit() -> list[GuardOutcome]:
        outcomes = []
        if held is not None and ledger is not None and not held.committed:
            ledger.commit(held, data)
            outcomes.append(
                GuardOutcome("builtin", "ledger_committed", True, details={"ledger_key": str(p.ledger_key)})
            )
        if held is None or not held.committed:
            nonces.consume([aggregate])
            outcomes.append(GuardOutcome("builtin", "aggregate_consumed", True))
        return outcomes

    def on_failure() -> None:
        if held is not None and ledger is not None and not held.committed:
            ledger.release(held)

    return Production(
        frame=frame,
        files={RELEASE_NAME: data},
        details=details,
        before_commit=before_commit,
        on_failure=on_failure,
        reused=bool(held is not None and held.committed),
    )
