"""The typed pipeline spec: one ``pipeline.yaml`` parsed into frozen pydantic models.

Every front door (CLI, Airflow, Dagster) parses the same YAML into the same :class:`PipelineSpec`.
Models are frozen and reject unknown keys; errors name the YAML path (and line) of the offending
value. Keys are referenced by id only: inline key material is a :class:`~privstage.errors.SpecError`.

String values may use ``${VAR}`` or ``${VAR:-default}`` to read environment variables. Relative
dataset paths resolve against ``base_dir`` (by default the directory holding the spec file).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

# StrictModel and the key-id pattern live in privstage._model so that the config models the spec embeds
# (privstage.crypto's encryption specs) share them without an import cycle; re-exported here.
from privstage._model import INLINE_SECRET_FIELDS as INLINE_SECRET_FIELDS
from privstage._model import KEY_ID_PATTERN, StrictModel
from privstage.budget.values import Delta, Epsilon, PrivacyBudget
from privstage.errors import SpecError

__all__ = [
    "AnonymizeStage",
    "BFVParamsSpec",
    "CKKSParamsSpec",
    "DPAggregateStage",
    "DPBudgetSpec",
    "DPGroupsSpec",
    "DPPartitionSpec",
    "DPQuery",
    "DatasetInput",
    "DecryptStage",
    "EncryptStage",
    "EnvKeysSpec",
    "ExpectationSpec",
    "FileKeysSpec",
    "HEAggregateStage",
    "HEDPSpec",
    "HEDecryptStage",
    "HEEncryptStage",
    "HEKeygenStage",
    "HEMeasureSpec",
    "HENoiseSpec",
    "HERatioSpec",
    "HERoundSpec",
    "KeysSpec",
    "LocalKeyringSpec",
    "OutputSpec",
    "PipelineSpec",
    "PrivacyBudgetSpec",
    "PseudonymColumn",
    "PseudonymizeStage",
    "SparkSpec",
    "StageSpec",
    "load_spec",
    "parse_spec",
]

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"

_ID_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _reads_like_words(value: str) -> bool:
    """True for ids a person writes: one letter case, or short camelCase words between '-'/'_'.

    Random base64 mixes cases in long runs between separators; of 10^6 random 32-byte keys
    (url-safe, unpadded) none reads like words, of 16-byte keys about 0.1%.
    """
    letters = [c for c in value if c.isalpha()]
    if all(c.islower() for c in letters) or all(c.isupper() for c in letters):
        return True
    for segment in re.split(r"[-_]", value):
        if len(segment) > 12:
            return False
        # Words average three characters or more ("tenantKeyA", "v2"); random text does not.
        if len(segment) > 4 and len(segment) < 3 * len(_ID_WORD.findall(segment)):
            return False
    return True


def _looks_like_key_material(value: str) -> bool:
    """True for strings that are plausibly an encoded key (hex or base64 of 16 bytes or more)."""
    if re.fullmatch(r"[0-9a-fA-F]{32,}", value):
        return True
    if len(value) >= 22 and re.fullmatch(r"[A-Za-z0-9+/_-]+={0,2}", value):
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return False
        return len(raw) >= 16 and not _reads_like_words(value.rstrip("="))
    return False


def validate_key_id(value: str) -> str:
    """Check that a key id is an id, not key material."""
    if not isinstance(value, str) or not KEY_ID_PATTERN.fullmatch(value):
        raise ValueError(
            "a key id is 1-64 characters of letters, digits, '.', '_' or '-' (reference keys by id; "
            "key material never goes in a spec)"
        )
    if _looks_like_key_material(value):
        raise ValueError(
            "this key id looks like key material; reference keys by id only "
            "(an id is words joined by '-', '_' or '.', e.g. 'pseudonym-key')"
        )
    if re.search(r"[-._][vV][0-9]+$", value):
        raise ValueError(
            "a key id may not end in a version suffix such as '.v2' or '_V2': key providers use it "
            "for key versions (name the key, the provider keeps its versions)"
        )
    return value


KeyId = Annotated[str, Field(description="Id of a key held by the key provider (never the key itself).")]


# --------------------------------------------------------------------------------------------
# Environment: Spark and keys
# --------------------------------------------------------------------------------------------
class SparkSpec(StrictModel):
    """How to get a SparkSession. Environment wins: ``SPARK_REMOTE`` selects Spark Connect."""

    master: str | None = Field(None, description="Spark master URL; default local[*].")
    remote: str | None = Field(None, description="Spark Connect URL (sc://host:port) or 'local[N]'.")
    app_name: str = Field("privstage", description="Spark application name.")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings.")


class LocalKeyringSpec(StrictModel):
    """Local development keyring file created by ``privstage keys init`` (never for production)."""

    provider: Literal["local"] = "local"
    path: str | None = Field(
        None, description="Keyring file; default $PRIVSTAGE_KEYRING or <state_dir>/dev-keyring.json."
    )


class FileKeysSpec(StrictModel):
    """A directory of key files, as Kubernetes mounts a Secret: key id = file name."""

    provider: Literal["files"]
    directory: str = Field(description="Directory holding one base64 key per file (<id> or <id>.v<N>).")


class EnvKeysSpec(StrictModel):
    """Keys in environment variables: <prefix><ID> (current) and <prefix><ID>_V<N> (versions)."""

    provider: Literal["env"]
    prefix: str = Field("PRIVSTAGE_KEY_", pattern=r"^[A-Z][A-Z0-9_]*$")


KeysSpec = Annotated[LocalKeyringSpec | FileKeysSpec | EnvKeysSpec, Field(discriminator="provider")]


# --------------------------------------------------------------------------------------------
# Datasets and guards
# --------------------------------------------------------------------------------------------
class DatasetInput(StrictModel):
    """Where a stage reads: a dataset path, or the committed output of an earlier stage."""

    path: str | None = Field(None, description="Dataset path (relative paths resolve against base_dir).")
    stage: str | None = Field(None, description="Name of an earlier stage whose output to read.")
    format: Literal["parquet", "csv", "json"] = "parquet"
    options: dict[str, str] = Field(default_factory=dict, description="Reader options (csv: header, ...).")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetInput:
        if (self.path is None) == (self.stage is None):
            raise ValueError("give exactly one of 'path' or 'stage'")
        return self


class OutputSpec(StrictModel):
    """Where a stage writes. Outputs are committed atomically (staging directory, then rename)."""

    path: str
    format: Literal["parquet"] = "parquet"
    mode: Literal["error", "overwrite"] = Field(
        "error", description="'error' refuses an existing output; 'overwrite' replaces it atomically."
    )
    partition_by: tuple[str, ...] = ()


class ExpectationSpec(StrictModel):
    """One Great Expectations expectation, as GX 1.x writes it in a suite: type + kwargs."""

    type: str = Field(pattern=r"^expect_[a-z0-9_]+$", description="GX expectation type (snake case).")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    blocking: bool = Field(True, description="A failing blocking expectation stops the pipeline.")


class StageBase(StrictModel):
    name: str = Field(pattern=NAME_PATTERN, description="Stage name, unique in the pipeline.")
    description: str | None = None
    input: DatasetInput
    output: OutputSpec
    sensitive_columns: tuple[str, ...] = Field(
        (), description="Columns whose values never appear in guard results or reports."
    )
    expect_before: tuple[ExpectationSpec, ...] = ()
    expect_after: tuple[ExpectationSpec, ...] = ()

    def input_sensitive_columns(self) -> frozenset[str]:
        return frozenset(self.sensitive_columns)

    def key_ids(self) -> frozenset[str]:
        return frozenset()


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------
class PseudonymColumn(StrictModel):
    """One column replaced by its keyed pseudonym HMAC-SHA-256(key, normalise(value))."""

    column: str
    key_id: KeyId
    case_fold: bool = Field(False, description="Unicode full case folding before hashing.")
    encoding: Literal["hex", "base64url"] = "hex"
    bits: int = Field(256, ge=128, le=256, multiple_of=8, description="Truncate the MAC to this many bits.")
    output_column: str | None = Field(None, description="Rename the column; the raw column never remains.")

    @field_validator("key_id")
    @classmethod
    def _check_key_id(cls, value: str) -> str:
        return validate_key_id(value)


class PseudonymizeStage(StageBase):
    """Keyed pseudonymization (HMAC-SHA-256). There is no unkeyed mode."""

    kind: Literal["pseudonymize"]
    columns: tuple[PseudonymColumn, ...] = Field(min_length=1)
    tenant_column: str | None = Field(
        None, description="Derive a separate key per value of this column so tenants cannot be linked."
    )

    @model_validator(mode="after")
    def _unique(self) -> PseudonymizeStage:
        names = [c.column for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"a column is listed twice in columns: {sorted(names)}")
        outs = [c.output_column or c.column for c in self.columns]
        if len(set(outs)) != len(outs):
            raise ValueError("two pseudonymized columns would have the same output name")
        if self.tenant_column and self.tenant_column in names:
            raise ValueError("tenant_column cannot itself be pseudonymized in the same stage")
        return self

    def input_sensitive_columns(self) -> frozenset[str]:
        return frozenset(self.sensitive_columns) | {c.column for c in self.columns}

    def key_ids(self) -> frozenset[str]:
        return frozenset(c.key_id for c in self.columns)


# --------------------------------------------------------------------------------------------
# dp_aggregate
# --------------------------------------------------------------------------------------------
DPQueryType = Literal["count", "count_units", "sum", "mean", "variance", "quantiles", "histogram"]
_VALUE_QUERIES = frozenset({"sum", "mean", "variance", "quantiles"})
PERIOD_FIELDS = ("year", "month", "day", "partition")


class DPQuery(StrictModel):
    """One released statistic per group, with its own share of the stage's budget.

    ``count`` (rows), ``count_units`` (distinct privacy units), ``sum``, ``mean`` and ``variance`` of a
    column, ``quantiles`` (read off a noisy histogram of ``bins`` equal-width bins over the bounds) and
    ``histogram`` (noisy counts per declared bin). Every numeric input has declared bounds: a missing
    bound is an error, bounds are never derived from the data.
    """

    name: str = Field(pattern=NAME_PATTERN, description="Output column of the released value.")
    type: DPQueryType
    column: str | None = Field(None, description="Input column (sum, mean, variance, quantiles, histogram).")
    lower: float | None = Field(None, description="Declared lower bound; values are clamped to it.")
    upper: float | None = Field(None, description="Declared upper bound; values are clamped to it.")
    epsilon: Epsilon = Field(description="This query's share of ε.")
    delta: Delta = Field(Delta(0), description="This query's share of δ (gaussian_discrete only).")
    mechanism: Literal["geometric", "gaussian_discrete"] = Field(
        "geometric", description="Integer noise: geometric (pure ε) or discrete Gaussian (needs δ > 0)."
    )
    quantiles: tuple[float, ...] = Field((), description="quantiles: the probabilities to release, in (0, 1).")
    bins: int = Field(64, ge=2, le=4096, description="quantiles: equal-width bins over [lower, upper].")
    edges: tuple[float, ...] = Field((), description="histogram: increasing bin edges; values are clamped into them.")

    @model_validator(mode="after")
    def _shape(self) -> DPQuery:
        kind = self.type
        if kind in ("count", "count_units"):
            if self.column is not None or self.lower is not None or self.upper is not None:
                raise ValueError(f"a {kind} query takes no column or bounds")
        elif self.column is None:
            raise ValueError(f"a {kind} query needs a column")
        if kind in _VALUE_QUERIES:
            missing = [b for b in ("lower", "upper") if getattr(self, b) is None]
            if missing:
                raise ValueError(
                    f"query '{self.name}' ({kind} of {self.column}) needs declared bounds: {' and '.join(missing)} "
                    "missing (bounds are never derived from the data)"
                )
            assert self.lower is not None and self.upper is not None
            for bound in (self.lower, self.upper):
                if bound != bound or bound in (float("inf"), float("-inf")):
                    raise ValueError(f"query '{self.name}': bounds must be finite numbers")
            if not self.lower < self.upper:
                raise ValueError(f"query '{self.name}': lower ({self.lower}) must be below upper ({self.upper})")
        elif kind == "histogram":
            if self.lower is not None or self.upper is not None:
                raise ValueError(f"histogram '{self.name}' is bounded by its edges; drop lower/upper")
        if kind == "histogram":
            if len(self.edges) < 2 or any(not a < b for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise ValueError(f"histogram '{self.name}' needs at least two strictly increasing edges")
            if any(e != e or e in (float("inf"), float("-inf")) for e in self.edges):
                raise ValueError(f"histogram '{self.name}': edges must be finite")
        elif self.edges:
            raise ValueError(f"edges belong to histogram queries, not {kind}")
        if kind == "quantiles":
            if not self.quantiles or any(not 0 < q < 1 for q in self.quantiles):
                raise ValueError(f"quantiles '{self.name}' needs probabilities strictly between 0 and 1")
        elif self.quantiles:
            raise ValueError(f"quantiles belong to quantiles queries, not {kind}")
        if self.mechanism == "geometric" and not self.delta.is_zero:
            raise ValueError(f"query '{self.name}': geometric is pure ε, so delta must be 0 (or use gaussian_discrete)")
        if self.mechanism == "gaussian_discrete" and kind in ("quantiles", "histogram"):
            raise ValueError(f"{kind} '{self.name}' uses geometric noise on its bin counts (mechanism: geometric)")
        if self.mechanism == "gaussian_discrete" and self.delta.is_zero:
            raise ValueError(f"query '{self.name}': gaussian_discrete needs delta > 0")
        return self

    @property
    def budget(self) -> PrivacyBudget:
        return PrivacyBudget(self.epsilon, self.delta)


class PrivacyBudgetSpec(StrictModel):
    """An (ε, δ) pair in a spec."""

    epsilon: Epsilon
    delta: Delta = Delta(0)

    @property
    def budget(self) -> PrivacyBudget:
        return PrivacyBudget(self.epsilon, self.delta)


class DPGroupsSpec(StrictModel):
    """Which groups are released: a public key set, or private partition selection.

    ``public`` is the product of per-column value lists; ``keys`` lists key tuples (in ``group_by``
    order); ``select`` releases only groups whose noisy count of privacy units clears a threshold
    chosen so that a group of one unit appears with probability at most δ. A group is never released
    just because it exists in the data.
    """

    public: dict[str, tuple[Any, ...]] | None = Field(None, description="Per group column, its public values.")
    keys: tuple[tuple[Any, ...], ...] | None = Field(None, description="Public key tuples, in group_by order.")
    select: PrivacyBudgetSpec | None = Field(None, description="Private partition selection's (ε, δ > 0).")

    @model_validator(mode="after")
    def _one(self) -> DPGroupsSpec:
        given = [n for n in ("public", "keys", "select") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of groups.public, groups.keys or groups.select")
        if self.select is not None and self.select.delta.is_zero:
            raise ValueError("groups.select needs delta > 0 (thresholding costs δ)")
        if self.public is not None and any(len(v) == 0 for v in self.public.values()):
            raise ValueError("groups.public lists an empty set of values")
        return self


class DPBudgetSpec(StrictModel):
    """The ledger entry a DP stage spends from: a declared total per dataset and period."""

    dataset: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="Dataset the budget protects.")
    period: str = Field(
        description="Budget period: a literal ('2026') or a template of the run's partition: "
        "'{year}', '{month}', '{day}' or '{partition}'."
    )
    total: PrivacyBudgetSpec = Field(description="Total (ε, δ) the dataset may spend in one period.")

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        fields = set(re.findall(r"\{([^{}]*)\}", value))
        unknown = fields - set(PERIOD_FIELDS)
        if unknown:
            known = ", ".join("{" + f + "}" for f in PERIOD_FIELDS)
            raise ValueError(f"a period template knows {known}; got {sorted(unknown)}")
        if not value or len(value) > 128:
            raise ValueError("period is 1 to 128 characters")
        return value

    @property
    def needs_partition(self) -> bool:
        return "{" in self.period


class DPPartitionSpec(StrictModel):
    """A run aggregates one partition of its input: the rows whose ``column`` falls in the run's partition."""

    column: str = Field(description="Date or timestamp column the partition filters on.")
    granularity: Literal["day", "month", "year"] = "month"


class DPAggregateStage(StageBase):
    """Differentially private aggregates per group, with per-unit contribution bounding and a durable budget."""

    kind: Literal["dp_aggregate"]
    privacy_unit: str = Field(description="Column identifying the privacy unit (e.g. a patient id).")
    derive: dict[str, str] = Field(
        default_factory=dict, description="New columns as Spark SQL expressions of one row (e.g. zip3)."
    )
    group_by: tuple[str, ...] = Field((), description="Group key columns (input or derived); empty: one global row.")
    groups: DPGroupsSpec | None = Field(None, description="Released groups (required with group_by).")
    max_groups_per_unit: int = Field(1, ge=1, le=100_000, description="Groups one unit may contribute to.")
    max_rows_per_group: int = Field(1, ge=1, le=100_000, description="Rows one unit may contribute to one group.")
    precision: int = Field(2, ge=0, le=9, description="Decimal digits of fixed-point sums (scale 10^precision).")
    on_invalid: Literal["drop", "error"] = Field(
        "drop", description="Null, NaN or infinite values: left out and counted, or an error."
    )
    on_null_unit: Literal["drop", "error"] = Field(
        "error", description="Rows whose privacy unit is null: an error (default) or dropped and counted."
    )
    clamp_counts: bool = Field(True, description="Release negative noisy counts as 0 (post-processing).")
    partition: DPPartitionSpec | None = None
    queries: tuple[DPQuery, ...] = Field(min_length=1)
    budget: DPBudgetSpec

    @model_validator(mode="after")
    def _consistent(self) -> DPAggregateStage:
        names = [q.name for q in self.queries]
        if len(set(names)) != len(names):
            raise ValueError(f"query names must be unique: {names}")
        taken = set(self.group_by) | {f"{n}_ci95" for n in names}
        clash = sorted(set(names) & taken)
        if clash:
            raise ValueError(f"query names clash with group columns or _ci95 columns: {clash}")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by repeats a column")
        if self.privacy_unit in self.group_by:
            raise ValueError("the privacy unit cannot be a group key")
        if self.group_by and self.groups is None:
            raise ValueError(
                "group_by needs groups: a public key set (groups.public / groups.keys) or private partition "
                "selection (groups.select); a group is never released just because it exists in the data"
            )
        if not self.group_by and self.groups is not None:
            raise ValueError("groups without group_by: a global aggregate has one public group")
        if self.groups is not None and self.groups.public is not None:
            if set(self.groups.public) != set(self.group_by):
                raise ValueError(
                    f"groups.public must list exactly the group_by columns {list(self.group_by)}, "
                    f"got {sorted(self.groups.public)}"
                )
        if self.groups is not None and self.groups.keys is not None:
            bad = [k for k in self.groups.keys if len(k) != len(self.group_by)]
            if bad:
                raise ValueError(f"groups.keys tuples must have {len(self.group_by)} values; got {list(bad[0])}")
        if not self.total_budget().fits_within(self.budget.total.budget):
            raise ValueError(
                f"the queries (and group selection) ask for {self.total_budget()}, more than the declared "
                f"total {self.budget.total.budget} for one period"
            )
        return self

    def total_budget(self) -> PrivacyBudget:
        """What one run of the stage spends: the sum of its queries' shares and of group selection."""
        parts = [q.budget for q in self.queries]
        if self.groups is not None and self.groups.select is not None:
            parts.append(self.groups.select.budget)
        return PrivacyBudget.total(parts)

    def input_sensitive_columns(self) -> frozenset[str]:
        return frozenset(self.sensitive_columns) | {self.privacy_unit}


# --------------------------------------------------------------------------------------------
# Homomorphic summation across parties: he_keygen, he_encrypt, he_aggregate, he_decrypt
# --------------------------------------------------------------------------------------------
HE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class CKKSParamsSpec(StrictModel):
    """CKKS parameters as written in a spec; checked by :class:`privstage.he.CKKSParams` at plan time."""

    scheme: Literal["ckks"]
    poly_modulus_degree: int = Field(description="Ring degree N (slots = N/2).")
    coeff_mod_bit_sizes: tuple[int, ...] = Field(description="Coefficient-modulus prime sizes; the last is special.")
    scale_bits: int = Field(description="log2 of the encoding scale.")
    depth: int = Field(0, description="Multiplicative depth (0 for sums).")

    def to_params(self) -> Any:
        """The checked :class:`~privstage.he.params.CKKSParams` (raises ``HEParameterError`` with the limit)."""
        from privstage.he.params import CKKSParams

        return CKKSParams(
            poly_modulus_degree=self.poly_modulus_degree,
            coeff_mod_bit_sizes=self.coeff_mod_bit_sizes,
            scale_bits=self.scale_bits,
            depth=self.depth,
        )


class BFVParamsSpec(StrictModel):
    """BFV parameters as written in a spec; checked by :class:`privstage.he.BFVParams` at plan time."""

    scheme: Literal["bfv"]
    poly_modulus_degree: int = Field(description="Ring degree N (slots = N).")
    coeff_mod_bit_sizes: tuple[int, ...] = Field(description="Coefficient-modulus prime sizes; the last is special.")
    plain_modulus: int = Field(description="Prime t ≡ 1 (mod 2N); slots hold values in [-(t-1)/2, (t-1)/2].")

    def to_params(self) -> Any:
        """The checked :class:`~privstage.he.params.BFVParams` (raises ``HEParameterError`` with the limit)."""
        from privstage.he.params import BFVParams

        return BFVParams(
            poly_modulus_degree=self.poly_modulus_degree,
            coeff_mod_bit_sizes=self.coeff_mod_bit_sizes,
            plain_modulus=self.plain_modulus,
        )


HEParamsSpec = Annotated[CKKSParamsSpec | BFVParamsSpec, Field(discriminator="scheme")]


class HEMeasureSpec(StrictModel):
    """One quantity summed per group (maps to :class:`privstage.he.Measure`)."""

    name: str = Field(pattern=NAME_PATTERN, description="Name of the measure in the release.")
    kind: Literal["sum", "count"] = Field(description="'sum' of a column or 'count' of rows.")
    column: str | None = Field(None, description="The summed column (sums only).")
    bound: Decimal = Field(description="Bound on |a party's group total|, in release units (declared, checked).")
    decimals: int = Field(0, ge=0, le=12, description="Release grid 10^-decimals (0 for counts).")

    def to_measure(self) -> Any:
        from privstage.he.layout import Measure

        return Measure(name=self.name, kind=self.kind, column=self.column, bound=self.bound, decimals=self.decimals)


class HERoundSpec(StrictModel):
    """One aggregation round, declared by the key holder and published beside its public context.

    Parties and the aggregator read it from the key holder's output (``context``): the parameters,
    the public group key set and measures (the slot layout) and the expected party ids.
    """

    round_id: str = Field(pattern=HE_ID_PATTERN, description="Id of the round; contributions name it.")
    params: HEParamsSpec
    parties: tuple[str, ...] = Field(min_length=1, description="Ids of the parties expected to contribute.")
    group_keys: tuple[str, ...] = Field(min_length=1, description="The public, ordered group key set.")
    measures: tuple[HEMeasureSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> HERoundSpec:
        for what, values in (("parties", self.parties), ("group_keys", self.group_keys)):
            if len(set(values)) != len(values):
                raise ValueError(f"round.{what} lists a value twice")
        bad = [p for p in self.parties if not re.fullmatch(HE_ID_PATTERN, p)]
        if bad:
            raise ValueError(f"party ids are letters, digits, '.', '_' or '-': {bad}")
        names = [m.name for m in self.measures]
        if len(set(names)) != len(names):
            raise ValueError(f"measure names must be unique: {names}")
        return self


class HEStageBase(StageBase):
    """HE stages: ``context`` is the key holder's published output (public context and round)."""

    context: DatasetInput = Field(description="The he_keygen output: public context and round definition.")


class HEKeygenStage(StageBase):
    """Key holder: create the context, seal the secret part, publish the public context and the round."""

    kind: Literal["he_keygen"]
    input: DatasetInput | None = Field(None, description="None: key generation reads no data.")
    round: HERoundSpec
    secret_key_id: KeyId = Field(description="Key that seals the secret context at rest (AES-256-GCM).")
    secret_dir: str | None = Field(None, description="Where sealed secret contexts live; default <state_dir>/he.")

    @field_validator("secret_key_id")
    @classmethod
    def _check_key_id(cls, value: str) -> str:
        return validate_key_id(value)

    @model_validator(mode="after")
    def _no_input(self) -> HEKeygenStage:
        if self.input is not None:
            raise ValueError("he_keygen reads no input dataset")
        return self

    def key_ids(self) -> frozenset[str]:
        return frozenset({self.secret_key_id})


class HEEncryptStage(HEStageBase):
    """Party: per-group sums computed locally in Spark, encrypted under the public context only."""

    kind: Literal["he_encrypt"]
    party_id: str = Field(pattern=HE_ID_PATTERN, description="This party's id (one of round.parties).")
    group_column: str = Field(description="Input column holding the group key (cast to string).")
    key_id: KeyId = Field(description="The party's key that authenticates its manifest.")
    expect_fingerprint: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="Pin the public context (SHA-256) received out of band."
    )

    @field_validator("key_id")
    @classmethod
    def _check_key_id(cls, value: str) -> str:
        return validate_key_id(value)

    def key_ids(self) -> frozenset[str]:
        return frozenset({self.key_id})


class HEAggregateStage(HEStageBase):
    """Aggregator: verify every party's contribution and add them slot by slot, without any secret key."""

    kind: Literal["he_aggregate"]
    input: DatasetInput | None = Field(None, description="None: the contributions are listed in 'inputs'.")
    inputs: tuple[DatasetInput, ...] = Field(min_length=1, description="One ciphertext dataset per party.")
    aggregator_id: str = Field(pattern=HE_ID_PATTERN)
    key_id: KeyId = Field(description="The aggregator's key that authenticates its manifest.")
    party_keys: dict[str, KeyId] | None = Field(
        None, description="Party id -> key id verifying its manifest; None leaves that check to the key holder."
    )

    @model_validator(mode="after")
    def _check(self) -> HEAggregateStage:
        if self.input is not None:
            raise ValueError("he_aggregate reads its contributions from 'inputs', not 'input'")
        for key_id in [self.key_id, *(self.party_keys or {}).values()]:
            validate_key_id(key_id)
        return self

    def key_ids(self) -> frozenset[str]:
        return frozenset({self.key_id, *(self.party_keys or {}).values()})


class HERatioSpec(StrictModel):
    """A released ratio of two released measures per group (e.g. the average cost per visit)."""

    name: str = Field(pattern=NAME_PATTERN)
    numerator: str
    denominator: str
    decimals: int = Field(2, ge=0, le=12)


class HENoiseSpec(StrictModel):
    """DP noise on one measure before release; sensitivity in release units (one privacy unit's effect)."""

    epsilon: Epsilon
    delta: Delta = Delta(0)
    sensitivity: Decimal = Field(gt=0, description="Largest change one privacy unit makes to a group's value.")
    mechanism: Literal["geometric", "gaussian_discrete"] = "geometric"

    @model_validator(mode="after")
    def _delta(self) -> HENoiseSpec:
        if self.mechanism == "geometric" and not self.delta.is_zero:
            raise ValueError("geometric noise is pure ε: delta must be 0 (or use gaussian_discrete)")
        if self.mechanism == "gaussian_discrete" and self.delta.is_zero:
            raise ValueError("gaussian_discrete needs delta > 0")
        return self


class HEDPSpec(StrictModel):
    """Differentially private release: noise per measure, spent from the budget ledger."""

    budget: DPBudgetSpec
    noise: dict[str, HENoiseSpec] = Field(min_length=1)

    def total_budget(self) -> PrivacyBudget:
        return PrivacyBudget.total([PrivacyBudget(n.epsilon, n.delta) for n in self.noise.values()])


class HEDecryptStage(HEStageBase):
    """Key holder: verify the aggregate, decrypt, check against the plan, release rounded (optionally noised) sums."""

    kind: Literal["he_decrypt"]
    secret_key_id: KeyId = Field(description="Key that sealed the secret context (as in he_keygen).")
    secret_dir: str | None = Field(None, description="Where sealed secret contexts live; default <state_dir>/he.")
    aggregator_key_id: KeyId = Field(description="Key verifying the aggregator's manifest.")
    party_keys: dict[str, KeyId] | None = Field(None, description="Party id -> key id verifying party manifests.")
    group_column: str = Field("group", pattern=NAME_PATTERN, description="Name of the released group key column.")
    ratios: tuple[HERatioSpec, ...] = ()
    dp: HEDPSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> HEDecryptStage:
        for key_id in [self.secret_key_id, self.aggregator_key_id, *(self.party_keys or {}).values()]:
            validate_key_id(key_id)
        if self.dp is not None and not self.dp.total_budget().fits_within(self.dp.budget.total.budget):
            raise ValueError(
                f"the noise asks for {self.dp.total_budget()}, more than the declared total "
                f"{self.dp.budget.total.budget} for one period"
            )
        return self

    def key_ids(self) -> frozenset[str]:
        return frozenset({self.secret_key_id, self.aggregator_key_id, *(self.party_keys or {}).values()})


HE_STAGE_KINDS: tuple[str, ...] = ("he_keygen", "he_encrypt", "he_aggregate", "he_decrypt")


# --------------------------------------------------------------------------------------------
# encrypt / decrypt (the encryption configs are privstage.crypto's models, embedded as they are)
# --------------------------------------------------------------------------------------------
from privstage.crypto.envelope import EncryptionSpec, refuse_weak_settings  # noqa: E402  (after StrictModel)


class EncryptStage(StageBase):
    """AES-256-GCM envelope encryption at rest: Parquet Modular Encryption (``mode: file``) or per-value
    AEAD bound to dataset, column and row key (``mode: field``). Only AES-256-GCM exists; ECB, CBC,
    GCM-CTR, user IVs and plaintext footers are refused here, before any data is read."""

    kind: Literal["encrypt"]
    encryption: EncryptionSpec = Field(description="What to encrypt and with which KEK (privstage.crypto config).")
    subject_keys: str | None = Field(
        None,
        description="Field mode with subject_column: the per-subject key store "
        "(default <state_dir>/subject-keys/<dataset>.json). Never back it up beside the data.",
    )

    @model_validator(mode="after")
    def _encrypt_consistent(self) -> EncryptStage:
        if self.subject_keys is not None and getattr(self.encryption, "subject_column", None) is None:
            raise ValueError("subject_keys needs encryption.subject_column (per-subject keys)")
        if self.output.partition_by:
            raise ValueError("an encrypted output is one directory of files listed in its manifest: no partition_by")
        return self

    def input_sensitive_columns(self) -> frozenset[str]:
        return frozenset(self.sensitive_columns) | set(self.encryption.columns)

    def key_ids(self) -> frozenset[str]:
        return frozenset(
            {self.encryption.kek_id, getattr(self.encryption, "footer_kek_id", None) or self.encryption.kek_id}
        )


class DecryptStage(StageBase):
    """Verify an encrypted dataset against its sealed manifest and decrypt it. Any tampering (a flipped
    byte, a swapped or moved value, a replaced or deleted file) is an IntegrityError and nothing is
    written; a shredded subject or a missing key version is KeyUnavailable."""

    kind: Literal["decrypt"]
    mode: Literal["field", "file"] = Field(description="How the input was encrypted (checked against its manifest).")
    dataset: str | None = Field(None, description="Expected dataset id of the input's manifest.")
    algorithm: Literal["AES-256-GCM"] = Field("AES-256-GCM", description="The only algorithm privstage offers.")
    kek_id: KeyId | None = Field(None, description="Expected KEK id (default: whatever the manifest names).")
    subject_keys: str | None = Field(
        None, description="Per-subject key store (default <state_dir>/subject-keys/<dataset>.json)."
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_weak(cls, data: Any) -> Any:
        return refuse_weak_settings(data)

    @model_validator(mode="after")
    def _decrypt_consistent(self) -> DecryptStage:
        if self.kek_id is not None:
            validate_key_id(self.kek_id)
        if self.output.partition_by:
            raise ValueError("decrypt writes its input's rows as they are: no partition_by")
        return self

    def key_ids(self) -> frozenset[str]:
        return frozenset({self.kek_id}) if self.kek_id else frozenset()


# --------------------------------------------------------------------------------------------
# anonymize
# --------------------------------------------------------------------------------------------
# privstage.anonymize.config builds on StrictModel and validate_key_id above; privstage.anonymize imports this
# module first (its __init__), so whichever is imported first, both are complete when this line runs.
from privstage.anonymize.config import AnonymizeConfig, DateShiftRule, KeepRule, PseudonymizeRule  # noqa: E402


class AnonymizeStage(StageBase, AnonymizeConfig):
    """Anonymization: one rule per input column (:class:`~privstage.anonymize.AnonymizeConfig`'s ``columns``,
    ``k``, ``l``, ``max_suppression``, ``null_policy``, ``unlisted``), enforced and measured on the release."""

    kind: Literal["anonymize"]

    def input_sensitive_columns(self) -> frozenset[str]:
        # Every column a rule transforms holds personal data; only explicitly kept columns are not.
        return frozenset(self.sensitive_columns) | {r.column for r in self.columns if not isinstance(r, KeepRule)}

    def key_ids(self) -> frozenset[str]:
        return frozenset(r.key_id for r in self.columns if isinstance(r, PseudonymizeRule | DateShiftRule))


StageSpec = Annotated[
    PseudonymizeStage
    | DPAggregateStage
    | AnonymizeStage
    | EncryptStage
    | DecryptStage
    | HEKeygenStage
    | HEEncryptStage
    | HEAggregateStage
    | HEDecryptStage,
    Field(discriminator="kind"),
]
STAGE_KINDS: tuple[str, ...] = ("pseudonymize", "dp_aggregate", "anonymize", "encrypt", "decrypt", *HE_STAGE_KINDS)


def stage_inputs(stage: StageSpec) -> tuple[DatasetInput, ...]:
    """Every dataset a stage reads: ``input``, ``inputs`` (he_aggregate) and ``context`` (HE stages)."""
    sources = [stage.input] if stage.input is not None else []
    sources += list(getattr(stage, "inputs", ()))
    context = getattr(stage, "context", None)
    if context is not None:
        sources.append(context)
    return tuple(sources)


class PipelineSpec(StrictModel):
    """A whole pipeline: environment plus an ordered list of stages."""

    version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    state_dir: str = Field(".privstage", description="Where local state lives (dev keyring, ledger).")
    spark: SparkSpec = SparkSpec()
    keys: KeysSpec = LocalKeyringSpec()
    stages: tuple[StageSpec, ...] = Field(min_length=1)
    base_dir: str = Field(".", description="Relative paths resolve against this; set by the loader.")

    @model_validator(mode="after")
    def _references(self) -> PipelineSpec:
        seen: set[str] = set()
        outputs: dict[str, str] = {}
        for i, stage in enumerate(self.stages):
            if stage.name in seen:
                raise ValueError(f"stages[{i}]: stage name '{stage.name}' is used twice")
            for source in stage_inputs(stage):
                if source.stage is not None and source.stage not in seen:
                    raise ValueError(
                        f"stages[{i}] ({stage.name}): input.stage '{source.stage}' is not an earlier stage"
                    )
            out = stage.output.path
            if out in outputs:
                raise ValueError(f"stages[{i}] ({stage.name}): output path also written by '{outputs[out]}'")
            outputs[out] = stage.name
            seen.add(stage.name)
        return self

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise SpecError(f"no stage named '{name}' (stages: {', '.join(s.name for s in self.stages)})")

    def resolve_path(self, path: str) -> str:
        """Absolute form of a dataset path; URIs (scheme://) are returned unchanged."""
        from privstage.io import is_uri

        if is_uri(path):
            return path
        p = Path(path).expanduser()
        if not p.is_absolute():
            p = Path(self.base_dir) / p
        return str(p.resolve())

    def input_path(self, stage: StageSpec) -> str:
        if stage.input is None:
            raise SpecError("this stage reads no single input dataset", stage=stage.name)
        return self.dataset_path(stage.input)

    def dataset_path(self, source: DatasetInput) -> str:
        """The absolute path a :class:`DatasetInput` names (an earlier stage's output, or a path)."""
        if source.stage is not None:
            return self.resolve_path(self.stage(source.stage).output.path)
        assert source.path is not None
        return self.resolve_path(source.path)

    def input_format(self, stage: StageSpec) -> str:
        if stage.input is None:
            return "parquet"
        return "parquet" if stage.input.stage is not None else stage.input.format

    def state_path(self) -> Path:
        return Path(self.resolve_path(self.state_dir))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise SpecError(f"environment variable ${{{name}}} is not set and has no default", path=where or None)

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _line_index(node: yaml.Node | None, prefix: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map YAML paths to 1-based line numbers, for error messages."""
    out: dict[tuple[Any, ...], int] = {}
    if node is None:
        return out
    out[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out.update(_line_index(v, (*prefix, key)))
            # A block value starts on the line after its key; point at the key.
            out[(*prefix, key)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_line_index(v, (*prefix, i)))
    return out


def _format_loc(loc: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """Render a pydantic error location as a YAML path; drop union tags pydantic inserts."""
    parts: list[str] = []
    clean: list[Any] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
            clean.append(item)
            continue
        # Tags of discriminated unions ('pseudonymize', 'local', ...) follow an index or a field.
        if (
            i > 0
            and item in (*STAGE_KINDS, "local", "files", "env", "ckks", "bfv")
            and clean
            and (isinstance(loc[i - 1], int) or loc[i - 1] in ("keys", "params"))
        ):
            continue
        if i > 0 and item in ("field", "file") and loc[i - 1] == "encryption":
            continue  # the tag of the embedded encryption config's union
        parts.append(("." if parts else "") + str(item))
        clean.append(item)
    return "".join(parts) or "<root>", tuple(clean)


def _spec_error(exc: ValidationError, lines: Mapping[tuple[Any, ...], int], source: str) -> SpecError:
    messages = []
    errors = exc.errors(include_url=False, include_input=False)
    # pydantic also reports "too short" for a list whose only item failed: noise, drop it.
    nested = [tuple(e["loc"]) for e in errors]
    errors = [
        e
        for e in errors
        if not (
            e["type"] == "too_short"
            and any(len(o) > len(e["loc"]) and o[: len(e["loc"])] == tuple(e["loc"]) for o in nested)
        )
    ]
    for err in errors:
        where, clean = _format_loc(tuple(err["loc"]))
        line = None
        probe = clean
        while probe and line is None:
            line = lines.get(probe)
            probe = probe[:-1]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not part of the spec; check spelling)"
        elif err["type"] == "union_tag_invalid":
            ctx = err.get("ctx") or {}
            last = clean[-1] if clean else None
            what = {"keys": "key provider", "params": "HE scheme"}.get(str(last), "stage kind")
            msg = f"unknown {what} '{ctx.get('tag')}' (known: {ctx.get('expected_tags')})"
        at = f" (line {line})" if line else ""
        messages.append(f"{where}{at}: {msg}")
    return SpecError(f"invalid pipeline spec {source}:\n  " + "\n  ".join(messages))


def parse_spec(
    text: str,
    *,
    base_dir: str | os.PathLike[str] = ".",
    env: Mapping[str, str] | None = None,
    source: str = "<string>",
) -> PipelineSpec:
    """Parse YAML text into a :class:`PipelineSpec`.

    Raises:
        SpecError: malformed YAML, unknown keys, wrong types, bad references; the message names
            the YAML path and line.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise SpecError(f"{source}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a pipeline spec is a YAML mapping with 'name' and 'stages'")
    data = _interpolate(data, os.environ if env is None else env)
    if "base_dir" in data:
        raise SpecError(
            f"{source}: base_dir is not a spec key; relative paths resolve against the spec's folder, "
            "--base-dir or PRIVSTAGE_BASE_DIR"
        )
    data["base_dir"] = str(Path(base_dir).resolve())
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc, _line_index(node), source) from None


def load_spec(
    path: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> PipelineSpec:
    """Load ``pipeline.yaml``. Relative paths resolve against ``base_dir`` (default: the file's folder)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read pipeline spec {p}: {exc.strerror}") from None
    env = os.environ if env is None else env
    if base_dir is None:
        base_dir = env.get("PRIVSTAGE_BASE_DIR") or p.resolve().parent
    return parse_spec(text, base_dir=base_dir, env=env, source=str(p))
