"""What the four HE stages share: the published round, the public context, sealed secrets, staging.

The key holder's ``he_keygen`` output is a small dataset (one row naming the round) with two files
beside it: ``_he_public_context.bin`` (the public context: public key only) and ``_he_round.json``
(parameters, slot layout, expected parties, the context's fingerprint). Parties, the aggregator and
the key holder's ``he_decrypt`` name that output as their ``context`` and rebuild the checked
parameters, layout and plan from it at plan time, before any data is read.

The library (:mod:`privstage.he.roles`) writes ciphertext datasets with a manifest computed from the
stored bytes (encryption is randomized). A stage therefore lets the library write into a private
directory beside the engine's staging area, and hands the engine a frame that *reads* those stored
ciphertexts plus the manifest file: the engine's staged output holds exactly the bytes the manifest
lists. The private directory is removed before the engine commits (or when the stage fails).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privstage import io
from privstage.errors import HEParameterError, IntegrityError, PrivstageError, SpecError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from privstage.he.context import PublicContext
    from privstage.he.layout import GroupLayout
    from privstage.he.params import HEParams, SumPlan
    from privstage.spec import DatasetInput, PipelineSpec

__all__ = [
    "PUBLIC_CONTEXT_FILE",
    "ROUND_FILE",
    "ROUND_FORMAT",
    "STORED_SCHEMA",
    "HEOutputGuard",
    "Round",
    "SecretPlacementGuard",
    "describe_round",
    "load_round",
    "params_from_dict",
    "private_dir",
    "remove_private",
    "round_document",
    "secret_path",
    "staged_frame",
    "stored_schema",
    "with_stage",
    "write_secret",
]

PUBLIC_CONTEXT_FILE = "_he_public_context.bin"
ROUND_FILE = "_he_round.json"
ROUND_FORMAT = "privstage-he-round/1"
#: Columns of a committed ciphertext dataset (the manifest's digests are over ``ciphertext``).
STORED_SCHEMA = "chunk int, ciphertext binary, layout_id string"


def with_stage(exc: PrivstageError, stage: str) -> PrivstageError:
    exc.stage = exc.stage or stage
    return exc


def params_from_dict(data: dict[str, Any]) -> HEParams:
    """Checked parameters from their ``to_dict`` form (as the round file carries them)."""
    from privstage.he.params import BFVParams, CKKSParams

    fields = {k: v for k, v in data.items() if k != "scheme"}
    if "coeff_mod_bit_sizes" in fields:
        fields["coeff_mod_bit_sizes"] = tuple(fields["coeff_mod_bit_sizes"])
    try:
        if data.get("scheme") == "ckks":
            return CKKSParams(**fields)
        if data.get("scheme") == "bfv":
            return BFVParams(**fields)
    except TypeError:
        pass
    raise HEParameterError("the round file declares unknown HE parameters")


@dataclass(frozen=True)
class Round:
    """A published round, checked: parameters, layout, plan, parties and the public context."""

    round_id: str
    params: HEParams
    layout: GroupLayout
    plan: SumPlan
    parties: tuple[str, ...]
    fingerprint: str
    public: bytes
    path: str

    def accept_public(self, role: str) -> PublicContext:
        """The public context for a role (refused when it holds a secret key)."""
        from privstage.he.context import PublicContext

        return PublicContext.from_bytes(self.public, self.params, role=role, fingerprint=self.fingerprint)


def round_document(round_id: str, layout: GroupLayout, plan: SumPlan, parties: tuple[str, ...], fp: str) -> bytes:
    body = {
        "format": ROUND_FORMAT,
        "round_id": round_id,
        "params": plan.params.to_dict(),
        "layout": layout.to_dict(),
        "layout_id": layout.layout_id,
        "parties": list(parties),
        "context_fingerprint": fp,
        "plan": plan.to_dict(),
    }
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8")


def load_round(spec: PipelineSpec, source: DatasetInput, *, stage: str) -> Round:
    """Read and check the key holder's published round (no data read).

    Raises:
        SpecError: the context dataset or its files are missing.
        IntegrityError: the public context does not match the round's fingerprint.
        HEParameterError, OverflowRisk: the round's parameters or plan fail the checks.
    """
    from privstage.he.context import context_fingerprint
    from privstage.he.layout import GroupLayout, layout_from_dict

    path = spec.dataset_path(source)
    folder = io.local_path(path)
    try:
        doc = json.loads((folder / ROUND_FILE).read_text(encoding="utf-8"))
        public = (folder / PUBLIC_CONTEXT_FILE).read_bytes()
    except FileNotFoundError:
        raise SpecError(
            f"context {path} is not an he_keygen output (run the key holder's he_keygen first)", stage=stage
        ) from None
    except (OSError, ValueError):
        raise SpecError(f"context {path}: the round file is unreadable", stage=stage) from None
    try:
        if doc.get("format") != ROUND_FORMAT:
            raise IntegrityError(f"context {path}: not a privstage HE round", stage=stage)
        if context_fingerprint(public) != doc.get("context_fingerprint"):
            raise IntegrityError(
                f"context {path}: the public context does not match the round's fingerprint (replaced or altered)",
                stage=stage,
            )
        params = params_from_dict(doc["params"])
        layout = layout_from_dict(doc["layout"])
        if not isinstance(layout, GroupLayout) or layout.layout_id != doc.get("layout_id"):
            raise IntegrityError(f"context {path}: the round's layout does not match its id", stage=stage)
        parties = tuple(str(p) for p in doc["parties"])
        plan = layout.plan(params, parties=len(parties))
    except PrivstageError as exc:
        raise with_stage(exc, stage) from None
    except (KeyError, TypeError, AttributeError):
        raise SpecError(f"context {path}: the round file is incomplete", stage=stage) from None
    return Round(
        round_id=str(doc["round_id"]),
        params=params,
        layout=layout,
        plan=plan,
        parties=parties,
        fingerprint=str(doc["context_fingerprint"]),
        public=public,
        path=path,
    )


def secret_path(spec: PipelineSpec, secret_dir: str | None, fingerprint: str) -> Path:
    """Where the key holder keeps the sealed secret context of a public fingerprint (never in an output)."""
    folder = Path(spec.resolve_path(secret_dir)) if secret_dir else spec.state_path() / "he"
    return folder / f"{fingerprint}.sealed"


def write_secret(path: Path, sealed: bytes) -> None:
    """Write the sealed secret context atomically (owner-only permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(sealed)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def private_dir(output_path: str) -> str:
    """A path (not yet existing) beside the engine's staging area for the library to commit into."""
    return io.new_staging_path(output_path, f"he-{uuid.uuid4().hex[:8]}")


def remove_private(path: str | None) -> None:
    if path:
        shutil.rmtree(io.local_path(path), ignore_errors=True)
        io.discard(path)  # also removes the staging folder once empty


def staged_frame(spark: SparkSession, path: str) -> DataFrame:
    """The stored ciphertexts of a library-committed dataset, in the committed dataset's columns."""
    return spark.read.schema(STORED_SCHEMA).parquet(path).select("chunk", "ciphertext", "layout_id")


def stored_schema() -> Any:
    """:data:`STORED_SCHEMA` as a StructType (built directly: parsing DDL needs a classic SparkContext)."""
    from pyspark.sql import types as T

    return T.StructType(
        [
            T.StructField("chunk", T.IntegerType()),
            T.StructField("ciphertext", T.BinaryType()),
            T.StructField("layout_id", T.StringType()),
        ]
    )


def describe_round(r: Round) -> dict[str, Any]:
    """Public facts of the round for ``privstage plan`` and the run report."""
    return {
        "round_id": r.round_id,
        "scheme": r.params.scheme,
        "params": r.params.to_dict(),
        "context_fingerprint": r.fingerprint,
        "layout_id": r.layout.layout_id,
        "group_keys": len(r.layout.keys),
        "measures": [m.name for m in r.layout.measures],
        "parties": list(r.parties),
        "error_bound": dict(r.plan.error_bound),
    }


@dataclass(frozen=True)
class HEOutputGuard:
    """After: the staged output has the shape the role must write (before anything is committed).

    Ciphertext outputs (``layout_id`` set): at least one row, every row tagged with the round's layout and
    its chunk inside the layout. Other outputs: exactly ``expected_rows`` rows (the key holder's round row;
    one released row per declared group).
    """

    expected_rows: int | None = None
    layout_id: str | None = None
    chunks: int | None = None
    name: str = "builtin"

    def check(self, ctx: Any) -> list[Any]:
        from pyspark.sql import functions as F

        from privstage.guards.base import GuardOutcome

        if self.layout_id is None:
            rows = ctx.data_stats().rows
            ok = rows == self.expected_rows
            return [
                GuardOutcome(self.name, "he_output_rows", ok, details={"rows": rows, "expected": self.expected_rows})
            ]
        assert self.chunks is not None
        chunk = F.col("chunk")
        stats = ctx.data.agg(
            F.count(F.lit(1)).alias("rows"),
            F.count(F.when(~F.col("layout_id").eqNullSafe(F.lit(self.layout_id)), 1)).alias("other_layout"),
            F.count(F.when(chunk.isNull() | (chunk < 0) | (chunk >= self.chunks), 1)).alias("outside"),
        ).first()
        details = {
            "rows": int(stats["rows"]),
            "other_layout": int(stats["other_layout"]),
            "outside": int(stats["outside"]),
        }
        ok = details["rows"] > 0 and details["other_layout"] == 0 and details["outside"] == 0
        return [GuardOutcome(self.name, "he_ciphertext_layout", ok, details=details)]


@dataclass(frozen=True)
class SecretPlacementGuard:
    """Before key generation: the sealed secret context's folder is not inside the (shipped) output."""

    secret_dir: str
    output_path: str
    name: str = "builtin"

    def check(self, ctx: Any) -> list[Any]:
        from privstage.guards.base import GuardOutcome

        secret, output = Path(os.path.realpath(self.secret_dir)), Path(os.path.realpath(self.output_path))
        inside = secret == output or secret.is_relative_to(output) or output.is_relative_to(secret)
        return [GuardOutcome(self.name, "secret_outside_output", not inside)]
